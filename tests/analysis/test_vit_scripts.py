"""The ViT commands: the embedded table beside ResNet numbers, the 2:4 benchmark."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import fst

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _summary(run, strategy, seed, top1, model="vit"):
    run.mkdir(parents=True)
    s = {"task": "classification", "model": model, "dataset": "digits", "strategy": strategy,
         "seed": seed, "epochs": 15, "global_batch_size": 64, "primary_metric": "top1",
         "val/top1": top1, "embedded_data": True}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(s))


def test_vit_table_beside_resnet_numbers(tmp_path):
    _summary(tmp_path / "runs" / "d0", "dense", 0, 90.0)
    _summary(tmp_path / "runs" / "d1", "dense", 1, 92.0)
    _summary(tmp_path / "runs" / "m0", "mvue", 0, 88.5)
    res = tmp_path / "table1_x.csv"
    res.write_text(
        "table,row,paper,scale,metric,n,mean,std,seeds,values\n"
        "table1,dense,71.2,digits 32px,top1,3,96.0,1.4,0 1 2,95 96 97\n"
    )
    md = _load("vit_table").main(
        [str(tmp_path / "runs"), "--out", str(tmp_path), "--resnet", str(res)]
    )
    text = md.read_text()
    assert "| dense | W X | W^T dY | dY X^T | 91.00 ± 1.41 (n=2) |  | 96.00 ± 1.40 (n=3) |" in text
    assert "| mvue | T(W) X | T(W)^T dY | MVUE(dY) X^T | 88.50 (n=1) | -2.50 | not run |" in (text)
    assert "ResNet-18 (a): digits 32px" in text
    _summary(tmp_path / "resnet_runs" / "r0", "dense", 0, 95.0, model="resnet18")
    with pytest.raises(SystemExit, match="no summary.json of a model=vit"):
        _load("vit_table").main([str(tmp_path / "resnet_runs"), "--out", str(tmp_path),
                                 "--resnet", str(res), "--name", "none"])  # fmt: skip


def test_bench_vit_runs_on_cpu_and_names_a_missing_backend(capsys):
    bench = _load("bench_vit")
    args = ["--model", "vit_tiny_patch16_224", "--res", "32", "--depth", "1", "--batch", "2", "--steps", "1",
            "--warmup", "0", "--dtype", "fp32", "--device", "cpu"]  # fmt: skip
    for what in ("mlp", "block", "step"):
        result = bench.main([*args, "--what", what, "--strategy", "fst"])
        assert result["tokens"] == 5 and result["sparse_ms"] > 0 and result["speedup"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["what"] == "step"
    with pytest.raises(SystemExit):
        bench.main([*args, "--backend", "no_such_backend"])
    assert "registered backends: native, reference" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["native", "sparse24"])
def test_vit_mlp_block_on_gpu_matches_reference(backend):
    """A ViT-B MLP block (class token + 14x14 grid) on a GPU backend in bf16 against the
    reference backend in float64, same weights and inputs (relative error of dX and dW)."""
    if backend not in fst.BACKENDS:
        pytest.skip(f"backend {backend!r} is not in this checkout")
    import copy

    import timm

    from fst.tokens import TokenLayout

    torch.manual_seed(0)
    mlp = timm.create_model("vit_base_patch16_224", pretrained=False, depth=1).blocks[0].mlp
    x, dy = torch.randn(4, 197, 768), torch.randn(4, 197, 768)
    grads = {}
    for name, dtype, device, be in (("ref", torch.float64, "cpu", "reference"),
                                    ("gpu", torch.bfloat16, "cuda", backend)):  # fmt: skip
        m = fst.sparsify(copy.deepcopy(mlp).to(device=device, dtype=dtype), "fst", be)
        for lin in (m.fc1, m.fc2):
            lin.token_layout = TokenLayout(1, (14, 14))
        xi = x.to(device=device, dtype=dtype).requires_grad_(True)
        m(xi).backward(dy.to(device=device, dtype=dtype))
        grads[name] = (xi.grad.double().cpu(), m.fc1.weight.grad.double().cpu())
    for got, want in zip(grads["gpu"], grads["ref"]):
        err = (got - want).norm() / want.norm()
        assert err < 2e-2, float(err)


def test_bench_vit_tiny_runs_every_variant_and_the_breakdown_on_cpu(capsys):
    """The issue-23 smoke configuration: sparse24 emulated on CPU, three strategies against
    dense, the where-the-time-goes breakdown; the last line is the JSON result."""
    bench = _load("bench_vit")
    args = ["--device", "cpu", "--tiny", "--backend", "sparse24", "--breakdown"]
    result = bench.main([*args, "--what", "step", "--strategies", "fst,fst_noir,mvue"])
    assert result["emulated"] and result["tokens"] == 5 and result["modes"] == ["eager"]
    assert [r["variant"] for r in result["rows"]] == ["dense", "fst", "fst_noir", "mvue"]
    assert all(r["ms"] > 0 and r["speedup"] > 0 for r in result["rows"])
    totals = result["breakdown"]["totals_ms"]
    for piece in ("eq1 dense", "eq1 2:4", "eq2 2:4", "eq3 fst unfused", "eq3 mvue", "masks S(W), S(W^T)",
                  "compress 2 operands", "IR half alone"):  # fmt: skip
        assert totals[piece] > 0, piece
    names = {r["layer"] for r in result["breakdown"]["rows"]}
    assert names == {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}
    out = capsys.readouterr().out
    assert "Where the time goes" in out
    assert json.loads(out.strip().splitlines()[-1])["rows"] == result["rows"]
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--tiny", "--modes", "graph"])
    assert "needs --device cuda" in capsys.readouterr().err
