"""ms/frame of the quantization modes against fp32 on the embedded CenterPoint default, measured in one run.

    PYTHONPATH=. python benchmarks/bench_modes.py --frames 60 --threads 2 [--json out.json]
    PYTHONPATH=. python benchmarks/bench_modes.py --config CFG --checkpoint CKPT --data-root DIR   # another model

The driver's own functions build everything (``integration.driver.pipeline``): the tiny CenterPoint-pillar
checkpoint on the synthetic nuScenes data (generated under ``work_dirs/`` on first use), one copy of the
float model per mode, quantized with the mode's preset and calibrated as the driver does by default (``max`` on
min(32, split size) training frames; ``--calib-frames`` to change the count). The calibration matters for the
timing too: a model calibrated on fewer frames predicts more low-score candidate boxes, which the detector's
post-processing (NMS) then spends more time on.
The models are then timed INTERLEAVED on the same validation frames: for every frame each model runs once
(``model.test_step``, what the driver's evaluation times: voxelization, network, box decoding and NMS) in an
order that rotates from frame to frame, under ``torch.no_grad()`` in eval mode. The first
``WARMUP_FRAMES`` frames (``integration.backends.base``) are left out; a val split shorter than warm-up plus
``--frames`` is cycled through. It prints median and mean ms/frame per
mode, their ratios to fp32 from this same run, the median of the per-frame ratios (each mode against fp32 on
the same frame, moments apart: the figure least moved by other load on the machine) and whether each mode meets
its target on that paired ratio.
"""
import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

from integration import backends  # noqa: E402
from integration.backends.base import WARMUP_FRAMES  # noqa: E402
from integration.driver import options, pipeline  # noqa: E402
from pytorch_quantization.ptq.atomic_io import atomic_write_text  # noqa: E402

#: upper bounds of each mode's ms/frame over fp32's (issue 15)
TARGETS = {"w8": 1.03, "w8a8": 1.10, "fp8": 1.15}
MODES = ("fp32",) + tuple(TARGETS)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40,
                        help=f"validation frames timed per mode, after {WARMUP_FRAMES} warm-up frames (default 40)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--system-malloc", action="store_true",
                        help="keep glibc's malloc settings (as the driver's --system-malloc; by default freed memory "
                             "stays in the heap, integration/driver/allocator.py)")
    parser.add_argument("--calib-frames", type=int, default=None,
                        help="training frames for max calibration (default: the driver's, min(32, split size))")
    for option in ("--config", "--checkpoint", "--data-root"):
        parser.add_argument(option, default=None, help="as for integration/centerpoint_ptq.py (default: the "
                            "embedded default)")
    args = parser.parse_args(argv)
    if args.frames < 1 or (args.calib_frames is not None and args.calib_frames < 1):
        parser.error("--frames and --calib-frames must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def build_models(args, work_dir):
    """``(models {mode: model}, config, calibration frames)`` through the driver's prepare / quantize_and_calibrate."""
    driver_argv = ["--modes", ",".join(MODES), "--calib-method", "max", "--work-dir", work_dir]
    if args.calib_frames is not None:
        driver_argv += ["--calib-batches", str(args.calib_frames)]
    for option in ("config", "checkpoint", "data_root"):
        if getattr(args, option) is not None:
            driver_argv += ["--" + option.replace("_", "-"), getattr(args, option)]
    if args.system_malloc:
        driver_argv.append("--system-malloc")
    driver_args = options.check_args(options.build_parser().parse_args(driver_argv))
    backend = backends.create(driver_args.framework, driver_args.pcdet_root)
    prepared = pipeline.prepare(driver_args, backend)
    models = {}
    for mode in MODES:
        model, _, _ = pipeline.quantize_and_calibrate(prepared["float_model"], mode, driver_args, None,
                                                      prepared["loader"], prepared["example"], backend)
        models[mode] = model.eval()
    return models, prepared["cfg"], prepared["calib_frames"]


def val_batches(cfg, count):
    """``count`` validation frames through the config's val dataloader (test pipeline), loaded once; the split
    is cycled through when it is shorter."""
    from mmengine.runner import Runner
    loader = Runner.build_dataloader(dict(cfg.val_dataloader, num_workers=0, persistent_workers=False))
    return list(itertools.islice(itertools.cycle(loader), count))


def time_interleaved(models, batches):
    """{mode: [seconds per frame]}, warm-up frames left out; the mode order rotates by one every frame."""
    names = list(models)
    samples = {name: [] for name in names}
    with torch.no_grad():
        for index, batch in enumerate(batches):
            for k in range(len(names)):
                name = names[(index + k) % len(names)]
                start = time.perf_counter()
                models[name].test_step(batch)
                if index >= WARMUP_FRAMES:
                    samples[name].append(time.perf_counter() - start)
    return samples


def summarize(samples):
    """Rows {mode, median_ms, mean_ms, ratio_median, ratio_mean, ratio_paired, target, met}. Ratios are to fp32's
    median / mean; ``ratio_paired`` is the median over frames of this mode's time over fp32's on the same frame
    (robust to load that drifts during the run) and decides ``met``."""
    ms = {name: (1e3 * statistics.median(s), 1e3 * statistics.fmean(s)) for name, s in samples.items()}
    base_median, base_mean = ms["fp32"]
    rows = []
    for name, (median, mean) in ms.items():
        target = TARGETS.get(name)
        paired = statistics.median(t / f for t, f in zip(samples[name], samples["fp32"]))
        rows.append(dict(mode=name, median_ms=median, mean_ms=mean, ratio_median=median / base_median,
                         ratio_mean=mean / base_mean, ratio_paired=paired, target=target,
                         met=None if target is None else bool(paired <= target)))
    return rows


def print_rows(rows, settings):
    print(f"# {settings}")
    print(f"{'mode':<6}{'median ms':>11}{'mean ms':>10}  x fp32: {'median':>8}{'mean':>8}{'paired':>8}"
          "  target (paired)")
    for r in rows:
        verdict = "" if r["target"] is None else f"<= {r['target']:.2f}x  {'met' if r['met'] else 'NOT MET'}"
        print(f"{r['mode']:<6}{r['median_ms']:>11.1f}{r['mean_ms']:>10.1f}          {r['ratio_median']:>7.3f}x"
              f"{r['ratio_mean']:>7.3f}x{r['ratio_paired']:>7.3f}x  {verdict}")


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_modes_") as work_dir:
        models, cfg, calib_frames = build_models(args, work_dir)
        batches = val_batches(cfg, args.frames + WARMUP_FRAMES)
        samples = time_interleaved(models, batches)
    rows = summarize(samples)
    settings = dict(frames=args.frames, warmup_frames=WARMUP_FRAMES, threads=torch.get_num_threads(),
                    torch=torch.__version__, calib_frames=calib_frames, calib_method="max",
                    malloc="glibc defaults" if args.system_malloc else "freed memory kept (driver default)")
    print_rows(rows, settings)
    if args.json:
        atomic_write_text(args.json, json.dumps(dict(settings=settings, rows=rows), indent=1))
    return rows


if __name__ == "__main__":
    main()
