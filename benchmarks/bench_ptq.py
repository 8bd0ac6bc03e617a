"""PTQ throughput: calibration cost per method and w8a8 fake-quant inference, each against the float forward
measured in the same run on the same inputs.

Models:
  * ``resnet``: a small ResNet-style CNN (stem + residual blocks of 3x3 convs, BN, ReLU) on 8x3x64x64 images;
  * ``bev``: CenterPoint-pillar-shaped BEV convolutions: 64->64 3x3 conv + BN + ReLU layers on a
    1x64x256x256 pseudo-image whose cells are ~90% exact zeros (as a pillar scatter produces).

For each model: float forward time per batch (median of --repeats passes over --batches batches), the time per
batch of a calibration pass (float forward + statistics collection) for max / percentile / mse / entropy, the
one-off amax search cost, and fake-quant w8a8 inference time. Targets: histogram calibration <= 1.5x a float forward per batch,
w8a8 fake-quant inference <= 1.3x float.

Usage: python benchmarks/bench_ptq.py [--models resnet bev] [--batches 3] [--repeats 2] [--bev-size 256]
"""
import argparse
import copy
import statistics
import time

import torch
from torch import nn

from pytorch_quantization.ptq import calibrate, find_quantizers, load_amax, quantize_model, Table
from pytorch_quantization import kernel_backend


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def resnet_model():
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         Block(32), Block(32), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), Block(64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def resnet_data(batches, _size):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(8, 3, 64, 64, generator=gen) for _ in range(batches)]


def bev_model():
    layers = []
    for _ in range(2):
        layers += [nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    return nn.Sequential(*layers)


def bev_data(batches, size):
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(batches):
        x = torch.randn(1, 64, size, size, generator=gen).abs()
        occupied = torch.rand(1, 1, size, size, generator=gen) < 0.1  # ~90% empty pillars
        out.append(x * occupied)
    return out


MODELS = {"resnet": (resnet_model, resnet_data), "bev": (bev_model, bev_data)}
METHODS = ("max", "percentile", "mse", "entropy")


def timed_against_float(float_fn, other_fn, repeats):
    """Median seconds of ``float_fn`` and of ``other_fn``, run alternately so both see the same machine load."""
    float_times, other_times = [], []
    for _ in range(repeats):
        for fn, times in ((float_fn, float_times), (other_fn, other_times)):
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return statistics.median(float_times), statistics.median(other_times)


def forward_all(model, data):
    with torch.no_grad():
        for x in data:
            model(x)


def collect_pass(model, data):
    """One more calibration pass over ``data`` into the calibrators ``calibrate`` installed (what each
    calibration batch costs: float forward plus statistics collection)."""
    refs = find_quantizers(model)
    for ref in refs:
        ref.quantizer.disable_quant()
        if ref.role == "input":
            ref.quantizer.enable_calib()
    forward_all(model, data)


def bench(name, batches, repeats, size):
    build, make_data = MODELS[name]
    torch.manual_seed(0)
    float_model = build().eval()
    data = make_data(batches, size)
    run_float = lambda: forward_all(float_model, data)  # noqa: E731
    run_float()  # warm-up
    rows, float_times = [], []
    quant = None
    for method in METHODS:
        quant = copy.deepcopy(float_model)
        quantize_model(quant, "w8a8")
        calibrate(quant, data, method=method, skip_zeros=name == "bev" and method != "max")
        float_t, collect_t = timed_against_float(run_float, lambda: collect_pass(quant, data), repeats)  # noqa: B023
        start = time.perf_counter()
        load_amax(quant, method)  # the one-off amax search from the collected statistics
        search = time.perf_counter() - start
        float_times.append(float_t)
        rows.append([f"calibrate {method}", collect_t / batches * 1e3, collect_t / float_t, search * 1e3])
    forward_all(quant, data[:1])  # warm-up
    float_t, quant_t = timed_against_float(run_float, lambda: forward_all(quant, data), repeats)
    float_times.append(float_t)
    rows.append(["w8a8 fake-quant forward", quant_t / batches * 1e3, quant_t / float_t, 0.0])
    table = Table(["step", "ms_per_batch", "x_float_forward", "amax_search_ms"],
                  title=f"{name}: float forward {statistics.median(float_times) / batches * 1e3:.1f} ms/batch "
                        f"(median), {batches} batches, {repeats} repeats")
    for row in rows:
        table.add(row)
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["resnet", "bev"])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bev-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels {kernel_backend()}")
    for name in args.models:
        table = bench(name, args.batches, args.repeats, args.bev_size)
        print(table)
        ratios = dict(zip(table.column("step"), table.column("x_float_forward")))
        hist = max(ratios[f"calibrate {m}"] for m in METHODS if m != "max")
        print(f"  histogram calibration: {hist:.2f}x float forward (target <= 1.5x); "
              f"w8a8 inference: {ratios['w8a8 fake-quant forward']:.2f}x float (target <= 1.3x)\n")


if __name__ == "__main__":
    main()
