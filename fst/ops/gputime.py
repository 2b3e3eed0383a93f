"""Timing one piece of GPU work: with its host launch cost (``time_ms``) or without (``graph_ms``).

On a GPU the two differ by the host work of each call: a cuSPARSELt GEMM builds its plan on
the host every call (PyTorch <= 2.11: hundreds of microseconds), a 2:4 mask is a dozen small
kernels each launched from Python. Eager training pays that host time unless the GPU has
enough queued work to hide it; a step replayed as one CUDA graph (``bench_step.py
--cuda-graph``) does not pay it at all. ``graph_ms`` measures what such a replay costs: the
calls are captured once into a CUDA graph and the graph is replayed between CUDA events.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["graph_ms", "time_ms"]


def _event_ms(fn: Callable[[], object]) -> float:
    """ms between CUDA events recorded just before and after ``fn()`` on the current stream."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_ms(fn: Callable[[], object], device: torch.device, reps: int = 3) -> float:
    """Median wall time of one ``fn()`` call in ms after one warm-up (CUDA events on a GPU).

    On a GPU the events enclose the host work of the call too, as eager execution pays it
    when nothing else is queued.
    """
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            times.append(_event_ms(fn))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def graph_ms(
    fn: Callable[[], object], device: torch.device, reps: int = 5, inner: int = 4
) -> float:
    """Median GPU time of one ``fn()`` call in ms with no host cost: ``inner`` calls captured
    in one CUDA graph, the graph replayed ``reps`` times between CUDA events.

    ``fn`` runs once uncaptured first (lazy initialisation, allocator warm-up). Raises what
    the capture raises (work that synchronises with the host cannot be captured); on a CPU
    device it falls back to :func:`time_ms`.
    """
    if device.type != "cuda":
        return time_ms(fn, device, reps)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            fn()
    graph.replay()
    times = [_event_ms(graph.replay) / inner for _ in range(reps)]
    del graph
    return statistics.median(times)
