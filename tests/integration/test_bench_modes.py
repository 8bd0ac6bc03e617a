"""``benchmarks/bench_modes.py`` (interleaved ms/frame of the modes against fp32) and the warm-up rule of the
backends' ms/frame (``integration.backends.base.FrameTimes``). No end-to-end run here: on the micro model it
takes about 40 s with its data fixture, too slow for the suite (the README's numbers come from real runs)."""
import importlib.util
import os

import pytest
import torch
from conftest import REPO

from integration.backends.base import WARMUP_FRAMES, FrameTimes


def _bench_modes():
    spec = importlib.util.spec_from_file_location("bench_modes", os.path.join(REPO, "benchmarks", "bench_modes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frame_times_leave_out_the_warm_up_iterations():
    times = FrameTimes()
    for seconds in [5.0] * WARMUP_FRAMES + [0.2, 0.4]:
        times.add(seconds)
    assert times.ms_per_frame == pytest.approx(300.0)  # (0.2 + 0.4) / 2 frames
    batched = FrameTimes()
    for _ in range(WARMUP_FRAMES):
        batched.add(9.0, frames=4)
    batched.add(1.0, frames=4)
    assert batched.ms_per_frame == pytest.approx(250.0)


def test_frame_times_of_a_short_evaluation_use_every_iteration():
    times = FrameTimes()
    for seconds in [0.1, 0.3][:WARMUP_FRAMES]:
        times.add(seconds)
    assert times.ms_per_frame == pytest.approx(1000.0 * sum([0.1, 0.3][:WARMUP_FRAMES]) / min(2, WARMUP_FRAMES))
    assert FrameTimes().ms_per_frame == 0.0


class _Recorder(torch.nn.Module):
    def __init__(self, name, calls):
        super().__init__()
        self.name, self.calls = name, calls

    def test_step(self, batch):
        self.calls.append((batch, self.name))


def test_interleaving_rotates_the_order_and_drops_the_warm_up_frames():
    bench = _bench_modes()
    calls = []
    models = {name: _Recorder(name, calls) for name in ("fp32", "w8", "w8a8")}
    frames = list(range(WARMUP_FRAMES + 4))
    samples = bench.time_interleaved(models, frames)
    assert [c[0] for c in calls] == [f for f in frames for _ in models]  # every model sees each frame in turn
    firsts = [calls[3 * i][1] for i in range(len(frames))]
    assert firsts[:3] == ["fp32", "w8", "w8a8"]  # who goes first rotates
    assert {name: len(s) for name, s in samples.items()} == {name: 4 for name in models}


def test_summary_ratios_are_to_fp32_of_the_same_run():
    bench = _bench_modes()
    rows = {r["mode"]: r for r in bench.summarize({"fp32": [0.10, 0.12, 0.30], "w8": [0.11, 0.12, 0.13],
                                                   "fp8": [0.2, 0.2, 0.2]})}
    assert rows["fp32"]["ratio_median"] == 1.0 and rows["fp32"]["met"] is None
    assert rows["w8"]["ratio_median"] == pytest.approx(1.0) and rows["w8"]["met"]
    assert rows["fp8"]["ratio_median"] == pytest.approx(2 / 1.2) and not rows["fp8"]["met"]
    assert rows["w8"]["ratio_mean"] == pytest.approx(0.12 / (0.52 / 3))
    assert rows["w8"]["ratio_paired"] == pytest.approx(1.0)  # per frame: 1.1, 1.0, 0.43
    assert rows["fp8"]["ratio_paired"] == pytest.approx(0.2 / 0.12)  # per frame: 2.0, 1.67, 0.67

