"""Progress reporting: a bar on a terminal, complete log lines when output is redirected."""

from __future__ import annotations

import io
import logging

import torch

from fst.engine.trainer import bar_postfix
from fst.logging.progress import LineProgress, progress, track
from fst.tasks.base import Task


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_a_file_gets_lines(caplog):
    from tqdm.auto import tqdm

    bar = progress(3, "epoch 1/1", stream=_Tty())
    assert isinstance(bar, tqdm)
    bar.close()
    lines = progress(3, "epoch 1/1", stream=io.StringIO(), every_s=0.0)
    assert isinstance(lines, LineProgress)
    with caplog.at_level(logging.INFO, logger="fst.progress"):
        lines.set_postfix(loss="2.301", img_s="0.48")
        lines.update(1)
        lines.update(1)
        lines.close()
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2 and msgs[1].startswith("epoch 1/1: 2/3 steps (67%), ")
    assert msgs[1].endswith("steps/s, loss=2.301, img_s=0.48")
    assert all("\r" not in m for m in msgs)


def test_lines_are_rate_limited_and_off_means_silent(caplog):
    with caplog.at_level(logging.INFO, logger="fst.progress"):
        bar = progress(1000, "epoch", stream=io.StringIO())  # default: at most one a minute
        for _ in range(1000):
            bar.update(1)
        off = progress(10, "x", enabled=False, stream=_Tty())
        for _ in range(10):
            off.update(1)
        assert list(track(range(5), "eval", stream=io.StringIO(), every_s=0.0)) == [0, 1, 2, 3, 4]
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 5 and msgs[-1].startswith("eval: 5/5 steps (100%)")


def test_detection_batches_count_their_images():
    """Issue 14 item 12: SSD's bar showed img_s=0 (0.48 images/s printed as %.0f); a
    detection batch is (list of images, list of targets)."""
    images = [torch.zeros(3, 300, 300) for _ in range(3)]
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)} for _ in range(3)]
    assert Task.batch_size(None, (images, targets)) == 3
    rec = {"train/loss": 15.509, "train/lr": 0.002, "train/img_per_s": 0.4804}
    assert bar_postfix(rec) == {"loss": "15.509", "lr": "0.002", "img_s": "0.48"}
    assert bar_postfix({**rec, "train/img_per_s": 1234.4})["img_s"] == "1234"


def test_batch_lines_say_batches_not_batchs(caplog):
    """Issue 26 item 10: detection eval logged "3/3 batchs"."""
    with caplog.at_level(logging.INFO, logger="fst.progress"):
        list(track(range(3), "eval", unit="batch", stream=io.StringIO(), every_s=0.0))
    msg = caplog.records[-1].getMessage()
    assert msg.startswith("eval: 3/3 batches (100%)") and "batches/s" in msg, msg
