"""cuSPARSELt matmul plans kept across calls, through CuPy's bindings
(``cupy_backends.cuda.libs.cusparselt``; ``cupy-cuda13x`` is on the GPU image).

``torch._cslt_sparse_mm`` (torch 2.4-2.14) initializes descriptors, an algorithm selection
and a plan, allocates a workspace, multiplies and destroys it all on every call: ~0.6-0.7 ms
of host time on an H100 (``results/gpu/``). :class:`CupyDriver` does the set-up once per
:class:`fst.ops.cslt.PlanKey` and then each call is one ``cusparseLtMatmul`` (plus the
output's allocation). The descriptors follow PyTorch's ``cuSPARSELtOps.cpp`` exactly, so the
operands compressed by ``torch._cslt_compress`` (its layout depends on the sparse operand's
descriptor only) multiply the same way:

- A (m, k): structured, row-major, ld k, alignment 16, 50% sparsity;
- B (k, n): row-major ld n (``b_row_major``), else described as (n, k) row-major, op TRANSPOSE;
- C = D (m, n): row-major ld n, or column-major ld m for ``transpose_result`` ((n, m) row-major);
- compute ``CUSPARSE_COMPUTE_32F`` (bf16 / fp16 inputs, fp32 accumulation), alpha 1, beta 0.

CuPy's ``matmul`` binding passes no stream, so cuSPARSELt runs on CUDA's legacy default
stream: :meth:`CupyDriver.usable` is true only when PyTorch's current stream is that stream
(its default) and no CUDA graph is being captured; elsewhere :class:`fst.ops.cslt.
CusparseltGemm` calls ``torch._cslt_sparse_mm`` (whose host cost a replayed graph does not
pay). Each new plan is checked once against ``torch._cslt_sparse_mm`` by the gemm, which drops
this driver for good on a mismatch or an error (API differences between CuPy versions
included), so a wrong binding costs speed, never results.

Needs CUDA and CuPy; nothing here runs in the CPU tests (they use
:class:`fst.ops.cslt.EmulatedGemm`, which keys plans the same way).
"""

from __future__ import annotations

import numpy as np
import torch

from fst.ops.cslt import PLAN_DRIVERS, PlanDriver, PlanKey


class _Plan:
    """The cuSPARSELt objects of one :class:`PlanKey`, kept alive with their workspace."""

    def __init__(self, key, plan, keep, workspace):
        self.key, self.plan, self.keep, self.workspace = key, plan, keep, workspace


class CupyDriver(PlanDriver):
    """Persistent plans through CuPy's cuSPARSELt bindings (see the module docstring)."""

    name = "cupy"

    def __init__(self):
        from cupy.cuda import runtime
        from cupy_backends.cuda.libs import cusparse
        from cupy_backends.cuda.libs import cusparselt as lt

        self.lt = lt
        self.handle = lt.Handle()
        lt.init(self.handle)
        self.types = {torch.bfloat16: runtime.CUDA_R_16BF, torch.float16: runtime.CUDA_R_16F}
        self.row, self.col = cusparse.CUSPARSE_ORDER_ROW, cusparse.CUSPARSE_ORDER_COL
        self.op_n = cusparse.CUSPARSE_OPERATION_NON_TRANSPOSE
        self.op_t = cusparse.CUSPARSE_OPERATION_TRANSPOSE
        # cuSPARSELt >= 0.6 numbers its compute types 32I = 0, 16F = 1, 32F = 2 (torch's
        # CUSPARSE_COMPUTE_32F for bf16); older CuPy enums carry the 0.5 names and values
        self.compute = getattr(lt, "CUSPARSE_COMPUTE_32F", 2)
        self.alpha = np.array(1.0, dtype=np.float32)  # host scalars, alive with the driver
        self.beta = np.array(0.0, dtype=np.float32)

    def usable(self, device: torch.device) -> bool:
        if device.type != "cuda" or torch.cuda.is_current_stream_capturing():
            return False
        return torch.cuda.current_stream(device).cuda_stream == 0

    def build(self, key: PlanKey) -> _Plan:
        lt, h = self.lt, self.handle
        dt = self.types[key.dtype]
        m, k, n = key.m, key.k, key.n
        a, b, c = lt.MatDescriptor(), lt.MatDescriptor(), lt.MatDescriptor()
        lt.structuredDescriptorInit(
            h, a, m, k, k, 16, dt, self.row, lt.CUSPARSELT_SPARSITY_50_PERCENT
        )
        if key.b_row_major:
            lt.denseDescriptorInit(h, b, k, n, n, 16, dt, self.row)
        else:
            lt.denseDescriptorInit(h, b, n, k, k, 16, dt, self.row)
        if key.transpose_result:
            lt.denseDescriptorInit(h, c, m, n, m, 16, dt, self.col)
        else:
            lt.denseDescriptorInit(h, c, m, n, n, 16, dt, self.row)
        mm = lt.MatmulDescriptor()
        op_b = self.op_n if key.b_row_major else self.op_t
        lt.matmulDescriptorInit(h, mm, self.op_n, op_b, a, b, c, c, self.compute)
        sel = lt.MatmulAlgSelection()
        lt.matmulAlgSelectionInit(h, sel, mm, lt.CUSPARSELT_MATMUL_ALG_DEFAULT)
        alg = np.array(key.alg, dtype=np.int32)
        lt.matmulAlgSetAttribute(h, sel, lt.CUSPARSELT_MATMUL_ALG_CONFIG_ID, alg.ctypes.data, 4)
        plan = lt.MatmulPlan()
        try:  # cuSPARSELt >= 0.5 (CuPy 13+): no workspace size argument
            lt.matmulPlanInit(h, plan, mm, sel)
            size = lt.matmulGetWorkspace(h, plan)
        except TypeError:  # older bindings
            size = lt.matmulGetWorkspace(h, sel)
            lt.matmulPlanInit(h, plan, mm, sel, size)
        device = torch.device(key.device)
        workspace = torch.empty(max(int(size), 1), dtype=torch.uint8, device=device)
        return _Plan(key, plan, (a, b, c, mm, sel, alg), workspace)

    def matmul(self, plan: _Plan, data: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        key = plan.key
        shape = (key.n, key.m) if key.transpose_result else (key.m, key.n)
        out = torch.empty(shape, dtype=b.dtype, device=b.device)
        self.lt.matmul(
            self.handle,
            plan.plan,
            self.alpha.ctypes.data,
            data.data_ptr(),
            b.data_ptr(),
            self.beta.ctypes.data,
            out.data_ptr(),
            out.data_ptr(),
            plan.workspace.data_ptr(),
        )
        return out


PLAN_DRIVERS[CupyDriver.name] = CupyDriver
