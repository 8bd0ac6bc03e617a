"""One-pass statistics vs one calibration pass per method, against the float forward measured in the same run.

A study compares several calibration methods; ``collect_statistics`` feeds max and both histogram variants
(with / without zeros) in ONE pass, and ``compute_amax`` derives each method's amaxes from it. This prints, per
model of ``bench_ptq``: the float forward time, the one-pass collection, the sum of separate ``calibrate`` passes
for the same 7 method variants, their ratio, and the ``auto_amax`` choice cost (candidates scored on 2 batches).

Usage: python benchmarks/bench_statistics.py [--models resnet bev] [--batches 3] [--bev-size 128]
"""
import argparse
import copy
import time

import torch

from bench_ptq import MODELS, forward_all
from pytorch_quantization import ptq

VARIANTS = [("max", False), ("percentile", False), ("percentile", True), ("mse", False), ("mse", True),
            ("entropy", False), ("entropy", True)]


def _seconds(fn):
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def bench(name, batches, size):
    build, make_data = MODELS[name]
    torch.manual_seed(0)
    float_model = build().eval()
    data = make_data(batches, size)
    forward_all(float_model, data)  # warm-up
    float_s = _seconds(lambda: forward_all(float_model, data))
    quant = copy.deepcopy(float_model)
    ptq.quantize_model(quant, "w8a8")
    holder = {}
    one_pass = _seconds(lambda: holder.setdefault("stats", ptq.collect_statistics(quant, data, cache_batches=2)))
    amax_s = _seconds(lambda: [ptq.compute_amax(holder["stats"], m, skip_zeros=s) for m, s in VARIANTS])
    separate = 0.0
    for method, skip in VARIANTS:
        model = copy.deepcopy(quant)
        separate += _seconds(lambda: ptq.calibrate(model, data, method=method, skip_zeros=skip))  # noqa: B023
    auto_s = _seconds(lambda: ptq.auto_amax(quant, holder["stats"]))
    table = ptq.Table(["step", "seconds", "x_float_forward"],
                      title=f"{name}: {batches} batches, float forward {float_s:.3f} s")
    for step, secs in (("one pass (max + 2 histograms)", one_pass), ("amax of 7 variants from it", amax_s),
                       ("7 separate calibrate passes", separate), ("auto_amax choice", auto_s)):
        table.add([step, secs, secs / float_s])
    return table, separate / (one_pass + amax_s)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["resnet", "bev"])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--bev-size", type=int, default=128)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        table, speedup = bench(name, args.batches, args.bev_size)
        print(table)
        print(f"  one pass + amax: {speedup:.2f}x faster than separate passes for the same 7 variants\n")


if __name__ == "__main__":
    main()
