"""Vision transformers: the ``vit`` builder and every strategy on a shrunk ViT."""

from __future__ import annotations

import pytest
import torch

import fst
from fst.models import MODELS
from fst.tokens import TokenLayout, token_layout_of

# An odd 5x5 patch grid (20 px, patch 4) with a class token and 2 register tokens.
TINY = dict(
    arch="vit_tiny_patch16_224",
    num_classes=3,
    img_size=20,
    patch_size=4,
    embed_dim=16,
    depth=2,
    num_heads=2,
    mlp_ratio=2.0,
    kwargs={"reg_tokens": 2},
)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("key", list(fst.STRATEGIES))
def test_every_strategy_runs_a_vit_step(key, backend):
    torch.manual_seed(0)
    model = fst.sparsify(MODELS.get("vit")(**TINY), key, backend)
    assert token_layout_of(model.blocks[1].mlp.fc2) == TokenLayout(3, (5, 5))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # stateful strategies (Table 3's baselines) hold masks / gradients in their sparsifier
    sparsifier = fst.build_sparsifier(model, opt, total_steps=2, steps_per_epoch=1)
    x, y = torch.randn(2, 3, 20, 20), torch.tensor([0, 2])
    for _ in range(2):  # two steps: the second runs on updated (re-masked) weights
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
        opt.step()
        if sparsifier is not None:
            sparsifier.step()
    assert torch.isfinite(loss)


def test_vit_builder_sizes_and_errors(tmp_path):
    model = MODELS.get("vit")(**TINY)
    assert model(torch.randn(2, 3, 20, 20)).shape == (2, 3)
    assert model.patch_embed.grid_size == (5, 5) and model.num_prefix_tokens == 3
    with pytest.raises(ValueError, match="not a timm ViT / DeiT.*deit_tiny_patch16_224"):
        MODELS.get("vit")(arch="deit_tiny_patch16", num_classes=3)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        MODELS.get("vit")(**{**TINY, "img_size": 22})
    with pytest.raises(ValueError, match=r"2x2 patch grid; set model.patch_size=4 \(an 8x8 grid\)"):
        MODELS.get("vit")(arch="deit_tiny_patch16_224", num_classes=10, img_size=32)
    with pytest.raises(ValueError, match="dynamic_img_size"):
        MODELS.get("vit")(**{**TINY, "kwargs": {"dynamic_img_size": True}})
    path = tmp_path / "vit.pt"
    torch.save(model.state_dict(), path)
    again = MODELS.get("vit")(**TINY, pretrained=str(path))
    assert torch.equal(again.pos_embed, model.pos_embed)


def test_finetune_a_timm_vit_state_dict_with_another_head(tmp_path, caplog):
    """Issue 26: a timm ViT's state_dict with a 1000-class head fine-tunes a 3-class vit."""
    import timm

    shape = {
        k: TINY[k]
        for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
    }
    src = timm.create_model("vit_tiny_patch16_224", num_classes=1000, reg_tokens=2, **shape)
    path = tmp_path / "vit-local.pth"
    torch.save(src.state_dict(), path)
    with caplog.at_level("WARNING"):
        m = MODELS.get("vit")(**TINY, pretrained=str(path))
    assert torch.equal(m.pos_embed, src.pos_embed)
    assert torch.equal(m.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    assert m.head.weight.shape == (3, 16)
    assert "classifier head head re-initialised (weights (1000, 16), model (3, 16)" in caplog.text
    with pytest.raises(ValueError, match=r"shape mismatch \['head.weight', 'head.bias'\]"):
        MODELS.get("vit")(**TINY, pretrained=str(path), pretrained_strict=True)


@pytest.mark.parametrize(
    "arch, dim, depth, heads",
    [("deit_tiny_patch16_224", 192, 12, 3), ("deit_small_patch16_224", 384, 12, 6),
     ("vit_base_patch16_224", 768, 12, 12)],
)  # fmt: skip
def test_named_architectures_keep_their_shape(arch, dim, depth, heads):
    """The issue's three models at 224 px (built on the meta device: no memory, no compute)."""
    with torch.device("meta"):
        model = MODELS.get("vit")(arch=arch, num_classes=1000)
    assert model.embed_dim == dim and len(model.blocks) == depth
    assert model.blocks[0].attn.num_heads == heads
    assert model.patch_embed.grid_size == (14, 14) and model.num_prefix_tokens == 1


@pytest.mark.parametrize(
    "name, arch",
    [("vit_deit_tiny_fst", "deit_tiny_patch16_224"), ("vit_deit_small_mvue", "deit_small_patch16_224"),
     ("vit_base_dense", "vit_base_patch16_224")],
)  # fmt: skip
def test_deit_recipe_experiments(name, arch):
    from omegaconf import OmegaConf

    from tests.conftest import compose

    cfg = compose([f"+experiment={name}"])
    assert cfg.name == name and cfg.model.name == "vit" and cfg.model.arch == arch
    assert cfg.sparsity.strategy == name.rsplit("_", 1)[1]
    assert cfg.data.name == "imagenet" and OmegaConf.is_missing(cfg.data, "root")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adamw", 1e-3, 0.05)
    assert cfg.data.batch_size == 1024 and cfg.trainer.epochs == 300
    assert (cfg.sched.name, cfg.sched.warmup_epochs, cfg.sched.min_lr) == ("cosine", 5, 1e-5)
    assert cfg.loss.label_smoothing == 0.1 and cfg.model.drop_path_rate == 0.1
    assert cfg.model.img_size == 224


def test_embedded_vit_experiment_follows_the_swept_strategy():
    from fst.engine.config import validate_config
    from tests.conftest import compose

    cfg = compose(["+experiment=vit_digits_fst", "sparsity=gx"])
    assert (cfg.name, cfg.sparsity.strategy, cfg.data.name) == ("vit_digits_gx", "gx", "digits")
    assert (cfg.model.img_size, cfg.model.patch_size) == (32, 4)  # an 8x8 patch grid
    validate_config(compose(["+experiment=vit_digits_fst", "+sparsity.prefix_tokens=include"]))
