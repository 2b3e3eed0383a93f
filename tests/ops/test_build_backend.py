"""Backends built from their ``configs/backend/<key>.yaml`` keys (:func:`fst.ops.build_backend`)."""

import copy
from pathlib import Path

import pytest
import yaml
from torch import nn

import fst
from fst.ops import BACKENDS, build_backend
from fst.ops.base import settings_of
from fst.ops.cslt import EmulatedGemm
from fst.ops.sparse24 import ENV, Sparse24Backend

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "backend").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_yaml_lists_the_backends_settings_with_their_defaults(path):
    cfg = yaml.safe_load(path.read_text())
    assert cfg.pop("name") == path.stem
    assert cfg == settings_of(type(BACKENDS.get(path.stem)))


def test_every_registered_backend_has_a_config():
    assert sorted(BACKENDS) == [p.stem for p in CONFIGS]


def test_default_settings_give_the_shared_instance_others_one_each():
    defaults = settings_of(Sparse24Backend)
    assert set(defaults) == set(ENV)
    assert build_backend("sparse24") is BACKENDS.get("sparse24")
    assert build_backend("sparse24", **defaults) is BACKENDS.get("sparse24")
    assert build_backend("native") is BACKENDS.get("native")
    be = build_backend("sparse24", kernels="sparse", tol=0.05)
    assert be is build_backend("sparse24", tol=0.05, kernels="sparse")
    assert be is not BACKENDS.get("sparse24") and (be.mode, be.tol) == ("sparse", 0.05)
    m = fst.sparsify(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), "fst", be)
    assert all(layer.backend_impl is be and layer.backend == "sparse24" for layer in m)
    assert copy.deepcopy(m)[0].backend_impl is be  # one instance per settings


def test_unknown_settings_and_bad_values_name_the_valid_ones():
    with pytest.raises(TypeError, match=r"\['kernel'\].*alg_search.*kernels.*timing"):
        build_backend("sparse24", kernel="auto")
    with pytest.raises(TypeError, match="no setting.*valid: none"):
        build_backend("native", kernels="auto")
    with pytest.raises(ValueError, match="kernels='fastest'.*auto, sparse, dense"):
        build_backend("sparse24", kernels="fastest")
    with pytest.raises(ValueError, match="timing='cpu'.*eager, graph"):
        build_backend("sparse24", timing="cpu")
    with pytest.raises(KeyError, match="unknown backend 'cuda_fast'.*native"):
        build_backend("cuda_fast")


def test_environment_overrides_the_settings(monkeypatch):
    be = Sparse24Backend(EmulatedGemm(), kernels="sparse", verify=True)
    assert (be.mode, be.verify, be.gemm.cache_packs) == ("sparse", True, True)
    for var, value in [(ENV["kernels"], "dense"), (ENV["verify"], "0"), (ENV["tol"], "0.1")]:
        monkeypatch.setenv(var, value)
    monkeypatch.setenv(ENV["pack_cache"], "false")
    monkeypatch.setenv(ENV["timing"], "Graph")
    be = Sparse24Backend(EmulatedGemm(), kernels="sparse", verify=True)
    assert (be.mode, be.verify, be.tol, be.timing) == ("dense", False, 0.1, "graph")
    assert not be.gemm.cache_packs
    with be.emulate():
        assert not be.gemm.cache_packs  # the emulated gemm too
