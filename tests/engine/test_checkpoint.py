"""Checkpoint files: atomic writes, refusing bad files, resume fallback, compatibility, RNG."""

from __future__ import annotations

import logging
import os
import pickle
import random
import re

import numpy as np
import pytest
import torch
from torch import nn

from fst.engine import checkpoint as ckpt
from fst.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_meta_compatible,
    check_state_dict_compatible,
    find_resume,
    load_checkpoint,
    previous_path,
    restore_rng_state,
    save_checkpoint,
)


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((64, 64), value)}, "step": int(value), "meta": {"x": "y"}}


def _tmp_leftovers(d):
    return [p.name for p in d.iterdir() if ".tmp-" in p.name]


def test_save_load_roundtrip_keeps_previous(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, _state(1.0))
    assert not previous_path(path).exists()
    save_checkpoint(path, _state(2.0))
    assert load_checkpoint(path)["step"] == 2
    assert torch.equal(
        load_checkpoint(previous_path(path))["model"]["w"], torch.full((64, 64), 1.0)
    )
    assert previous_path(path).name == "last.prev.pt"
    assert _tmp_leftovers(path.parent) == []


def test_failed_write_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))

    def crash(obj, f, *a, **k):
        f.write(b"partial bytes")  # the process dies halfway through writing
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _state(2.0))
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert _tmp_leftovers(tmp_path) == []


def test_truncated_checkpoint_is_refused_naming_file_and_fallback(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))
    save_checkpoint(path, _state(2.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "truncated or corrupt" in msg
    assert "last.prev.pt" in msg and "resume=auto" in msg


def test_flipped_bytes_fail_the_crc_check(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))
    data = bytearray(path.read_bytes())
    # Flip bytes inside the tensor payload: torch.load alone would return wrong values silently.
    start = data.index(np.float32(1.0).tobytes() * 8)
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its CRC check") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"not a checkpoint at all" * 5, "corrupt")],
)
def test_garbage_files_are_refused(tmp_path, content, message):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


class _Payload:
    """Pickles to a call of os.system: loading it with a plain unpickler runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _save_zip(obj, path):
    torch.save(obj, path)


def _save_legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def _save_raw_pickle(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.mark.parametrize("save", [_save_zip, _save_legacy, _save_raw_pickle])
def test_pickle_with_payload_is_refused_and_not_run(tmp_path, save):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    save({"model": {"w": torch.zeros(2)}, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert f"refusing to load {path}" in msg and "arbitrary code" in msg
    # Names the first object it refused: the payload, or torch's pickled-storage rebuilder.
    assert re.search(r"global (posix|os)\.system|global torch\.storage\._load_from_bytes", msg)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_outside_weights_only_subset_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"x": _Payload(marker)}, f, protocol=4)  # opcodes the safe unpickler rejects
    with pytest.raises(CheckpointError, match="not a weights-only torch checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_non_dict_checkpoint_is_refused(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)


def test_find_resume_falls_back_to_previous_good_checkpoint(tmp_path, caplog):
    d = tmp_path / "checkpoints"
    assert find_resume(tmp_path) is None
    save_checkpoint(d / "last.pt", _state(1.0))
    save_checkpoint(d / "best.pt", _state(9.0))
    assert find_resume(tmp_path) == d / "last.pt"
    save_checkpoint(d / "last.pt", _state(2.0))
    (d / "last.pt").write_bytes((d / "last.pt").read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        found = find_resume(tmp_path)
    assert found == d / "last.prev.pt"
    assert load_checkpoint(found)["step"] == 1
    assert "skipping checkpoint" in caplog.text and "last.pt" in caplog.text
    # Both damaged (e.g. a full disk): the surviving best.pt is still a resume point.
    (d / "last.prev.pt").write_bytes(b"")
    assert find_resume(tmp_path) == d / "best.pt"
    (d / "best.pt").write_bytes(b"junk")
    assert find_resume(tmp_path) is None


def test_without_keep_previous_the_prev_copy_goes_and_best_is_the_fallback(tmp_path):
    """trainer.keep_checkpoints=last_best (the default): no .prev file survives a save, and a
    damaged last.pt falls back to best.pt."""
    d = tmp_path / "checkpoints"
    save_checkpoint(d / "last.pt", _state(1.0))
    save_checkpoint(d / "last.pt", _state(2.0))  # keep_previous=True: last.prev.pt now exists
    assert (d / "last.prev.pt").is_file()
    save_checkpoint(d / "last.pt", _state(3.0), keep_previous=False)
    save_checkpoint(d / "best.pt", _state(3.0), keep_previous=False)
    assert sorted(p.name for p in d.iterdir()) == ["best.pt", "last.pt"]
    assert load_checkpoint(d / "last.pt")["step"] == 3
    (d / "last.pt").write_bytes((d / "last.pt").read_bytes()[:100])  # truncated
    assert find_resume(tmp_path) == d / "best.pt"


def _mlp(hidden: int = 8, out: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, out))


def test_state_dict_compatible_passes_for_same_model():
    check_state_dict_compatible(_mlp(), _mlp().state_dict())


def test_state_dict_shape_mismatch_names_keys_and_shapes():
    with pytest.raises(CheckpointError) as e:
        check_state_dict_compatible(_mlp(out=3), _mlp(out=5).state_dict(), source="run/last.pt")
    msg = str(e.value)
    assert "run/last.pt" in msg
    assert "shape mismatches (2)" in msg
    assert "2.weight: checkpoint [5, 8] vs model [3, 8]" in msg
    assert "2.bias: checkpoint [5] vs model [3]" in msg


def test_state_dict_from_different_model_lists_missing_and_unexpected():
    other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(CheckpointError) as e:
        check_state_dict_compatible(_mlp(), other.state_dict())
    msg = str(e.value)
    assert "unexpected keys (2): 4.weight, 4.bias" in msg
    assert "shape mismatches (2)" in msg and "2.weight: checkpoint [8, 8] vs model [3, 8]" in msg
    with pytest.raises(CheckpointError, match=r"missing keys \(2\): 4.weight, 4.bias"):
        check_state_dict_compatible(other, _mlp().state_dict())


def test_state_dict_ddp_prefix_hint():
    sd = {f"module.{k}": v for k, v in _mlp().state_dict().items()}
    with pytest.raises(CheckpointError, match="'module.' prefix"):
        check_state_dict_compatible(_mlp(), sd)


def test_meta_mismatch_names_the_setting():
    meta = {"model": "resnet18", "strategy": "fst", "backend": "native"}
    check_meta_compatible(meta, {"model": "resnet18", "strategy": "fst"})
    with pytest.raises(CheckpointError) as e:
        check_meta_compatible(meta, {"model": "resnet18", "strategy": "dense"}, source="a.pt")
    assert "strategy: checkpoint 'fst' vs this run 'dense'" in str(e.value)
    assert "a.pt" in str(e.value)
    # keys= restricts what must match: a backend change is fine for resume.
    check_meta_compatible(meta, {"strategy": "fst", "backend": "reference"}, keys=["strategy"])
    with pytest.raises(CheckpointError, match="no 'meta'"):
        check_meta_compatible(None, {"strategy": "fst"})
    with pytest.raises(CheckpointError, match="task: checkpoint '<absent>'"):
        check_meta_compatible(meta, {"task": "classification"})


def _draws():
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [np.random.randn()],
        torch.rand(3).tolist(),
    )


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in both generators' state
    np.random.randn()
    state = capture_rng_state()
    expected = _draws()
    save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    _draws()  # move every generator on
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert _draws() == expected


def test_secrets_are_not_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    state = {
        "config": {
            "logger": {"wandb": {"api_key": "hunter2", "project": "fst"}},
            "auth_token": "abc",
            "tokenizer": "bert",
            "note": "0123456789abcdef0123456789abcdef01234567",
            "tags": ["a", "0123456789abcdef0123456789abcdef01234567"],
        },
        "model": {"w": torch.zeros(1)},
    }
    save_checkpoint(tmp_path / "c.pt", state)
    raw = (tmp_path / "c.pt").read_bytes()
    assert b"hunter2" not in raw and b"0123456789abcdef0123456789abcdef" not in raw
    cfg = load_checkpoint(tmp_path / "c.pt")["config"]
    assert cfg["logger"]["wandb"] == {"api_key": "<redacted>", "project": "fst"}
    assert cfg["note"] == "<redacted>" and cfg["tags"] == ["a", "<redacted>"]
    assert cfg["auth_token"] == "<redacted>" and cfg["tokenizer"] == "bert"
    assert state["config"]["logger"]["wandb"]["api_key"] == "hunter2"  # caller's dict untouched
