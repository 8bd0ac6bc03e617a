"""Reconstruction (AdaRound / BRECQ / QDrop) against round-to-nearest, and its per-layer cost.

Models (random weights, seeded; inputs with correlated channels / smooth images, as real features have):
  * ``cnn``: a small ResNet-style CNN (stem, residual blocks, stride-2 conv, 1x1 head) on 4x3x32x32 images;
  * ``sparse``: a small spconv net (SubMConv3d input conv, a residual block of two SubMConv3d, SparseConv3d
    down, SubMConv3d, SparseInverseConv3d up) on ~600 active sites of a 24^3 grid (needs spconv).

For each model and setting (w4 AdaRound, w4a8 BRECQ with learned step sizes, w4a8 QDrop) the table gives the
output SQNR (dB) against the float model on held-out batches for round-to-nearest and after reconstruction, the
wall time, and the cost per layer and iteration. A cost probe (AdaRound on one 64->64 conv at four input sizes)
fits ``seconds per step = a + b * MACs``; from that fit the benchmark prints the expected reconstruction time of
pillar02 / voxel0075 CenterPoint (approximate MACs per frame from their configs), here and on a GPU of a given
effective throughput (an assumption printed with the result, not a measurement).

Usage: python benchmarks/bench_reconstruct.py [--models cnn sparse] [--iters 200] [--batches 4]
       [--gpu-tflops 20]
"""
import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from pytorch_quantization import ptq
from pytorch_quantization.ptq.forward import sqnr_db

# approximate multiply-accumulates per frame (GMAC) and quantized layer counts, from the MMDetection3D configs
# (pillar02: 512x512 BEV, SECOND 64/128/256 x 3/5/5 layers, SECONDFPN, 6-task head; voxel0075: ~150k voxels,
# sparse encoder 16-128 channels at ~8 neighbours per site, 180x180 BEV, SECOND 128/256 x 5/5, 6-task head)
TARGETS = {"pillar02": (64.0, 93), "voxel0075": (130.0, 120)}


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


def cnn_model():
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), Block(32), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                         Block(64), nn.Conv2d(64, 8, 1))


def cnn_data(count, gen):
    return [F.interpolate(torch.randn(4, 3, 8, 8, generator=gen), size=(32, 32), mode="bilinear")
            for _ in range(count)]


def sparse_model():
    import spconv.pytorch as spconv  # pylint: disable=import-outside-toplevel

    class SparseBlock(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = spconv.SubMConv3d(channels, channels, 3, indice_key="res", bias=False)
            self.conv2 = spconv.SubMConv3d(channels, channels, 3, indice_key="res", bias=False)

        def forward(self, x):
            y = self.conv1(x)
            y = self.conv2(y.replace_feature(F.relu(y.features)))
            return y.replace_feature(F.relu(y.features + x.features))

    class SparseNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_input = spconv.SubMConv3d(4, 16, 3, indice_key="res", bias=False)
            self.block = SparseBlock(16)
            self.down = spconv.SparseConv3d(16, 32, 3, stride=2, padding=1, indice_key="down", bias=False)
            self.mid = spconv.SubMConv3d(32, 32, 3, indice_key="mid", bias=False)
            self.up = spconv.SparseInverseConv3d(32, 8, 3, indice_key="down", bias=False)

        def forward(self, x):
            x = self.block(self.conv_input(x))
            y = self.mid(self.down(x))
            return self.up(y.replace_feature(F.relu(y.features)))

    return SparseNet()


def sparse_data(count, gen):
    import spconv.pytorch as spconv  # pylint: disable=import-outside-toplevel
    out = []
    for _ in range(count):
        coords = torch.unique(torch.randint(0, 24, (700, 3), generator=gen), dim=0)
        coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.long), coords], dim=1).int()
        base = torch.randn(len(coords), 1, generator=gen)
        features = base * torch.linspace(0.5, 1.5, 4) + 0.2 * torch.randn(len(coords), 4, generator=gen)
        out.append(spconv.SparseConvTensor(features, coords, [24, 24, 24], 1))
    return out


def cost_probe(iters, sizes=(16, 32, 64, 96)):
    """``[(MACs, seconds per AdaRound step)]`` of one 64->64 3x3 conv on 1x64xSxS inputs, S in ``sizes``."""
    points = []
    gen = torch.Generator().manual_seed(1)
    for size in sizes:
        conv = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1))
        data = [F.interpolate(torch.randn(1, 64, size // 4, size // 4, generator=gen), size=(size, size))]
        float_model = copy.deepcopy(conv)
        ptq.quantize_model(conv, "w4")
        ptq.calibrate(conv, data)
        table = ptq.reconstruct(conv, float_model, data, iters=iters, progress=False)
        points.append((size * size * 64 * 64 * 9, table.column("seconds")[0] / iters))
    return points


def run(name, model_fn, data_fn, args):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    base = model_fn()
    data, held = data_fn(args.batches, gen), data_fn(2, gen)
    rows = []
    for preset, method, learn_act in (("w4", "adaround", False), ("w4a8", "brecq", True), ("w4a8", "qdrop", True)):
        qmodel, float_model = copy.deepcopy(base), copy.deepcopy(base)
        ptq.quantize_model(qmodel, preset)
        ptq.calibrate(qmodel, data, method="max")
        with torch.no_grad():
            rtn = sum(sqnr_db(float_model(x), qmodel(x)) for x in held) / len(held)
        start = time.perf_counter()
        table = ptq.reconstruct(qmodel, float_model, data, method=method, iters=args.iters, learn_act=learn_act,
                                progress=False)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            learned = sum(sqnr_db(float_model(x), qmodel(x)) for x in held) / len(held)
        layers = sum(table.column("layers"))
        rows.append([name, f"{preset} {method}", layers, rtn, learned, learned - rtn, seconds,
                     1e3 * sum(table.column("seconds")) / (layers * args.iters)])
    return rows


def fit_line(points):
    """Least-squares ``seconds = a + b * macs``."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    b = sum((p[0] - mx) * (p[1] - my) for p in points) / var if var > 0 else 0.0
    return my - b * mx, b


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "sparse"], choices=["cnn", "sparse"])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--probe-iters", type=int, default=20, help="steps per size of the cost probe")
    parser.add_argument("--gpu-tflops", type=float, default=20.0,
                        help="assumed effective fp32 throughput of the GPU for the scaling estimate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = ptq.Table(["model", "setting", "layers", "rtn_sqnr_db", "recon_sqnr_db", "gain_db", "seconds",
                     "ms_per_layer_iter"], title=f"reconstruction vs round-to-nearest ({args.iters} iters, "
                                                 f"{args.batches} batches, 1 thread)")
    for name in args.models:
        if name == "sparse" and not ptq.HAS_SPCONV:
            print("sparse: skipped (spconv is not installed)")
            continue
        for row in run(name, *{"cnn": (cnn_model, cnn_data), "sparse": (sparse_model, sparse_data)}[name], args):
            out.add(row)
    print(out)
    a, b = fit_line(cost_probe(args.probe_iters))
    print(f"\nper-layer AdaRound step cost here (64->64 3x3 conv, 16^2..96^2 inputs): {1e3 * a:.3f} ms + "
          f"{1e12 * b:.1f} ms per GMAC  (throughput {6 / (1e9 * b):.1f} GFLOP/s for forward + backward)"
          if b > 0 else f"\nper-layer step cost {1e3 * a:.3f} ms (no MAC dependence measured)")
    print("expected time of per-layer AdaRound with --iters, one calibration frame per step: "
          "iters x (layers x a + MACs per frame x b) here; on a GPU: iters x (layers x overhead + "
          "6 x MACs / throughput)")
    for target, (gmac, layers) in TARGETS.items():
        here = args.iters * (layers * a + gmac * 1e9 * b) / 60
        gpu = args.iters * (layers * 2e-3 + 6 * gmac * 1e9 / (args.gpu_tflops * 1e12)) / 60
        print(f"  {target}: ~{gmac:.0f} GMAC/frame, {layers} layers -> ~{here:.0f} min on this CPU thread, "
              f"~{gpu:.1f} min on a GPU at an assumed {args.gpu_tflops:g} TFLOP/s (+2 ms per layer step)")


if __name__ == "__main__":
    main()
