"""Weight-only (w8) fake-quant inference with and without the weight cache, against the float model, in one run.

With the cache (``pytorch_quantization.nn.modules.weight_cache``, on by default) an eval-mode forward under
``torch.no_grad()`` reuses each layer's fake-quantized weight, so w8 inference should cost what the float
model costs. Models are the CNNs of ``bench_ptq.py`` (a small ResNet on 8x3x64x64 images, CenterPoint-like
BEV convolutions). Times are medians over --repeats rounds, the variants interleaved within each round.

Usage: python benchmarks/bench_weight_cache.py [--models resnet bev] [--repeats 15] [--threads 2] [--json PATH]
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kernels import write_json  # noqa: E402  pylint: disable=wrong-import-position
from bench_ptq import MODELS  # noqa: E402  pylint: disable=wrong-import-position

from pytorch_quantization.nn.modules import weight_cache  # noqa: E402  pylint: disable=wrong-import-position
from pytorch_quantization.ptq import quantize_model  # noqa: E402  pylint: disable=wrong-import-position


def w8_model(model):
    """A weight-only per-channel int8 copy of ``model`` with weight amax set from the weights (max calibration)."""
    quantized = copy.deepcopy(model)
    quantize_model(quantized, "w8")
    for module in quantized.modules():
        quantizer = getattr(module, "_weight_quantizer", None)
        if quantizer is None:
            continue
        weight = module.weight.detach()
        axes = quantizer.axis if isinstance(quantizer.axis, tuple) else (quantizer.axis,)
        reduce = [d for d in range(weight.dim()) if d not in axes] if quantizer.axis is not None else None
        quantizer.amax = weight.abs().amax(dim=reduce, keepdim=True) if reduce else weight.abs().amax()
    return quantized.eval()


def median_times(fns, repeats):
    """{name: median seconds}; each round runs every variant once, in turn."""
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            begin = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - begin)
    return {name: statistics.median(values) for name, values in samples.items()}


def run_model(name, repeats):
    build, data = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    quantized = w8_model(model)
    x = data(1, 128)[0]

    def cached(flag):
        def run():
            weight_cache.enable(flag)
            quantized(x)
        return run

    fns = {"fp32": lambda: model(x), "w8 uncached": cached(False), "w8 cached": cached(True)}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        weight_cache.enable(False)
        expected = quantized(x)
        weight_cache.enable(True)
        assert torch.equal(quantized(x), expected), "cached and uncached w8 outputs differ"
        times = median_times(fns, repeats)
    weight_cache.enable(True)
    return {"model": name, "ms": {k: v * 1e3 for k, v in times.items()},
            "ratio_vs_fp32": {k: v / times["fp32"] for k, v in times.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [run_model(name, args.repeats) for name in args.models]
    print(f"# threads {torch.get_num_threads()}, torch {torch.__version__}, median of {args.repeats}")
    print(f"{'model':<8}{'fp32 ms':>10}{'w8 uncached':>14}{'w8 cached':>12}{'uncached/fp32':>15}{'cached/fp32':>13}")
    for r in results:
        ms, ratio = r["ms"], r["ratio_vs_fp32"]
        print(f"{r['model']:<8}{ms['fp32']:>10.2f}{ms['w8 uncached']:>14.2f}{ms['w8 cached']:>12.2f}"
              f"{ratio['w8 uncached']:>14.2f}x{ratio['w8 cached']:>12.2f}x")
    if args.json:
        write_json(args.json, {"threads": torch.get_num_threads(), "repeats": args.repeats, "results": results})
    return results


if __name__ == "__main__":
    main()
