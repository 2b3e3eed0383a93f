"""Model conversion: :func:`sparsify`, :func:`densify` and :func:`summary`."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatch

from torch import nn

from fst.layers import DENSE_CLASSES, SPARSE_CLASSES, SparseConv2d, _SparseMixin
from fst.ops import BACKENDS, Backend
from fst.rules import operand_checks, weight_operands
from fst.strategies import Strategy, get_strategy
from fst.tokens import set_vit_token_layout, token_layout_of

__all__ = ["sparsify", "densify", "summary", "Summary", "why_dense"]

_SKIPPED_ATTR = "_fst_skipped"


def why_dense(m: nn.Module) -> str | None:
    """Why ``m`` (a Conv2d or Linear) cannot be sparsified, or None if it can."""
    if type(m) not in SPARSE_CLASSES and type(m) not in DENSE_CLASSES:
        return f"{type(m).__name__} subclasses {type(m).__mro__[1].__name__} with its own forward"
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            kind = "depthwise" if m.groups == m.in_channels == m.out_channels else "grouped"
            return f"{kind} conv (groups={m.groups}): no dense GEMM to prune"
        if m.padding_mode != "zeros":
            return f"padding_mode={m.padding_mode!r} (only zero padding is supported)"
        if isinstance(m.padding, str) and m.padding != "valid":
            return f"padding={m.padding!r} (give explicit padding to sparsify it)"
    return None


def sparsify(
    model: nn.Module,
    strategy: str | Strategy = "fst",
    backend: str | Backend = "native",
    decay: float = 2e-4,
    exclude: Iterable[str] = (),
    **options,
) -> nn.Module:
    """Make every ``nn.Conv2d`` (groups=1) and ``nn.Linear`` of ``model`` sparse, in place.

    Args:
        model: any module; converted in place and returned.
        strategy: a key of :data:`fst.strategies.STRATEGIES` (or a ``Strategy``).
        backend: a key of :data:`fst.ops.BACKENDS`, or a backend built by
            :func:`fst.ops.build_backend` (configured by its ``configs/backend`` keys).
        decay: SR-STE decay coefficient (Eq. 6); ignored by ``dense``.
        exclude: fnmatch patterns on module names (``"fc"``, ``"conv1"``, ``"*.downsample.0"``)
            of layers to keep dense. A pattern that matches no Conv2d/Linear is an error (a
            typo would otherwise silently prune a layer meant to stay dense).
        **options: strategy options (``ir_coef``, ``x_pattern``, ``wt_source``,
            ``mask_layout``; see :data:`fst.strategies.OPTIONS`), each given to the GEMM rules
            of the plan that declare it.

    Parameters keep their names and identity (the optimizer's references stay valid), so
    dense and sparse state_dicts load into each other. Grouped/depthwise convs and subclasses
    with their own ``forward`` stay dense; :func:`summary` says why. Calling it again
    reconfigures the model. The Linear layers of a timm vision transformer's blocks get the
    model's token layout (:func:`fst.tokens.set_vit_token_layout`: class / register /
    distillation tokens, then the patch grid), which Eq. 3 follows.
    """
    plan = get_strategy(strategy, **options)
    if not isinstance(backend, Backend):
        backend = BACKENDS.get(backend)  # fail early, listing the valid backends
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    unused = [p for p in exclude if not any(fnmatch(n, p) for n, _ in layers)]
    if unused:
        names = ", ".join(n for n, _ in layers[:8]) + (", ..." if len(layers) > 8 else "")
        raise ValueError(
            f"exclude pattern(s) {unused} match no Conv2d/Linear of the model; "
            f"layer names look like: {names}"
        )
    set_vit_token_layout(model)
    skipped: dict[str, str] = {}
    first_conv = next((n for n, m in layers if isinstance(m, nn.Conv2d)), None)
    for name, m in layers:
        hit = next((p for p in exclude if fnmatch(name, p)), None)
        reason = f"excluded by pattern {hit!r}" if hit else why_dense(m)
        if not reason and plan.dense_linear and isinstance(m, nn.Linear):
            reason = f"Linear layers stay dense under {plan.name!r} (as in the released code)"
        layer_plan = plan
        if name == first_conv and plan.dense_first_conv_weight:
            # the release keeps the stem's W dense but still masks its X in Eq. 3
            layer_plan = plan.replace(forward="dense", input_grad="dense")
        if reason:
            if isinstance(m, _SparseMixin):
                _to_dense(m)
            skipped[name] = reason
            continue
        if not isinstance(m, _SparseMixin):
            m.__class__ = SPARSE_CLASSES[type(m)]
        m.configure(layer_plan, backend, decay)
    setattr(model, _SKIPPED_ATTR, skipped)
    return model


def _to_dense(m: _SparseMixin) -> None:
    m.__class__ = DENSE_CLASSES[type(m)]
    attrs = ("plan", "strategy", "backend", "backend_impl", "decay", "geom", "last_input_shape")
    for attr in (*attrs, "rule_state"):
        m.__dict__.pop(attr, None)


def densify(model: nn.Module) -> nn.Module:
    """Undo :func:`sparsify` in place: sparse layers become plain Conv2d/Linear again.

    The weights are left as they are (dense); to deploy the 2:4 weights, multiply by the
    forward mask first (see ``eval.py --export``).
    """
    for m in model.modules():
        if isinstance(m, _SparseMixin):
            _to_dense(m)
    model.__dict__.pop(_SKIPPED_ATTR, None)
    return model


class Summary:
    """Per-layer report of a (sparsified) model; ``str()`` is a table, ``.rows`` the data."""

    columns = ("name", "type", "weight", "status", "eq1", "eq2", "eq3", "pad_W", "pad_WT", "note")

    def __init__(
        self, rows: list[dict], notes: list[str] | None = None, plans: list[str] | None = None
    ):
        self.rows = rows
        self.notes = list(notes or [])  # model-level remarks (e.g. dense attention GEMMs)
        self.plans = list(plans or [])  # "strategy/backend" of the converted layers

    @property
    def num_sparse(self) -> int:
        return sum(r["status"] == "sparse" for r in self.rows)

    def headline(self) -> str:
        """One line for logs: ``21/21 layers sparse (fst/native)``, plus how many sparse layers
        have a pruned operand that is not 2:4 along its GEMM's reduction dimension."""
        out = f"{self.num_sparse}/{len(self.rows)} layers sparse"
        if self.plans:
            out += f" ({', '.join(self.plans)})"
        not_nm = sum(
            r["status"] == "sparse"
            and any("not 2:4" in str(r[k]).lower() for k in ("eq1", "eq2", "eq3"))
            for r in self.rows
        )
        if not_nm:
            out += f"; {not_nm} with a pruned operand not 2:4 along its GEMM's reduction dim"
        return out

    def __str__(self) -> str:
        cells = [[str(r[c]) for c in self.columns] for r in self.rows]
        widths = [
            max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)
        ]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths))
        out = [line, "-" * len(line)]
        out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        out.append(f"{self.num_sparse}/{len(self.rows)} layers sparse")
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    __repr__ = __str__


def summary(model: nn.Module) -> Summary:
    """List every Conv2d/Linear: which GEMMs are sparse, shapes, padding, why a layer is dense.

    ``pad_W``/``pad_WT``: zeros added to complete the last group of S(W) (Ci*kh*kw % 4) and
    of S(W^T) (Co % 4). For sparse layers the Eq. 1/2 operands are checked to be 2:4 along
    their GEMM's reduction dimension (``ok``); Eq. 3's fixed mask F(X^T) is 2:4 along the
    flattened H*W only when the output width is even, reported once the layer has run.
    """
    skipped = getattr(model, _SKIPPED_ATTR, None)
    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        kind = "conv" if isinstance(m, nn.Conv2d) else "linear"
        co, k = m.weight.shape[0], m.weight[0].numel()
        row = dict(name=name, type=kind, weight="x".join(map(str, m.weight.shape)))
        if isinstance(m, _SparseMixin) and m.plan.is_dense:
            row.update(status="dense", **m.plan.describe(), pad_W="-", pad_WT="-")
            row["note"] = f"strategy {m.strategy!r} prunes no GEMM ({m.backend} backend)"
        elif isinstance(m, _SparseMixin):
            row.update(status="sparse", **_gemm_report(m), pad_W=(-k) % 4, pad_WT=(-co) % 4)
        else:
            if skipped is None:
                reason = "model not sparsified"
            else:
                reason = skipped.get(name) or why_dense(m) or "added after sparsify"
            row.update(status="dense", eq1="W X", eq2="W^T dY", eq3="dY X^T", note=reason)
            row.update(pad_W="-", pad_WT="-")
        row.setdefault("note", "")
        rows.append(row)
    plans = sorted(
        {f"{m.strategy}/{m.backend}" for m in model.modules() if isinstance(m, _SparseMixin)}
    )
    return Summary(rows, _attention_notes(model), plans)


def _attention_notes(model: nn.Module) -> list[str]:
    """Attention's activation x activation GEMMs (Q K^T, A V) have no weight: fst leaves them
    dense and prunes only the Linear layers around them (qkv, proj)."""
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.MultiheadAttention)
        or (hasattr(m, "num_heads") and any(isinstance(c, nn.Linear) for c in m.children()))
    ]
    if not names:
        return []
    shown = ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")
    return [
        f"attention GEMMs Q K^T and A V stay dense in all {len(names)} attention modules "
        f"({shown}): activation x activation products (timm's Attention runs "
        "F.scaled_dot_product_attention on q, k, v from its qkv Linear); only their Linear "
        "layers (qkv, proj) follow the strategy"
    ]


def _gemm_report(m: _SparseMixin) -> dict:
    plan, state = m.plan, m.rule_state
    eqs = plan.describe()
    notes = [f"{m.strategy}/{m.backend}"]
    if state is None and any(r.state_keys for r in plan.rules):
        notes.append(f"state held by sparsifier {plan.sparsifier!r}: not attached yet")
        return {**eqs, "note": "; ".join(notes)}
    checks = operand_checks(plan, *weight_operands(m.weight, plan, state=state), state=state)
    for check in checks:
        eqs[f"eq{check.eq}"] += f" [{check.label()}]"
    checked = {c.eq for c in checks}
    for rule in plan.rules:
        key = f"eq{rule.eq}"
        if rule.eq in checked or not rule.prunes:
            continue
        why = rule.skips(plan, tuple(m.weight.shape))
        if why:
            eqs[key] += f" [left dense: {why}]"
        elif rule.eq == 1 or getattr(rule, "prunes_weight", False):  # ASP's dense phase
            eqs[key] += " [mask not set yet: dense until its sparsifier prunes]"
        elif not rule.tensor_core(plan):  # a pruned dY or X^T, not 2:4 along the reduction dim
            eqs[key] += f" [{rule.pattern(plan)}: not 2:4, no sparse tensor core]"
    shape = getattr(m, "last_input_shape", None)
    eq3 = plan.rules[2]
    if eq3.prunes and eq3.positions_axis and not isinstance(m, SparseConv2d):
        tokens = token_layout_of(m)
        if shape is not None and len(shape) < 3:
            eqs["eq3"] = "dY X^T (2-D input: no token axis, Eq. 3 dense)"
        elif tokens is not None:
            prefix = "dense" if plan.prefix_tokens == "dense" else "pruned as one row"
            notes.append(f"tokens: {tokens.describe()}, prefix {prefix} in Eq. 3")
            note = eq3.note(plan, tokens.width)
            if note:
                notes.append(note.replace("Wo=", "grid width ").replace("H*W", "patches"))
    if eq3.prunes and isinstance(m, SparseConv2d) and shape is not None:
        note = eq3.note(plan, _out_width(m, shape[-1]))
        if note:
            notes.append(note)
    describe = getattr(m.backend_impl, "describe_layer", None)  # e.g. sparse24: kernel per GEMM
    if describe is not None:
        notes.append(describe(m))
    return {**eqs, "note": "; ".join(notes)}


def _out_width(m: nn.Conv2d, w: int) -> int:
    g = m.geom
    return (w + 2 * g.padding[1] - g.dilation[1] * (m.kernel_size[1] - 1) - 1) // g.stride[1] + 1
