"""Benchmark of the fake-quant kernels: our compiled ops against torch's built-ins, our pure-PyTorch
reference and ``x.clone()`` (the memory-bandwidth ceiling), all measured in one run.

Examples::

    PYTHONPATH=. python benchmarks/bench_kernels.py                     # quick, CI-scale
    PYTHONPATH=. python benchmarks/bench_kernels.py --full --json out.json
    PYTHONPATH=. python benchmarks/bench_kernels.py --ops per_tensor --dtypes float32 --sizes 16M --threads 2

A summary at the end lists the targets of the kernels with the ratio this run measured for each
(float32, largest size given): forward and forward+backward against clone, E4M3 forward (plain and scaled to
an amax, ``e4m3_scaled``) against clone,
the histogram against ``torch.histc``, and the per-call time of a ``TensorQuantizer`` forward on a
64 KiB tensor against ``torch.fake_quantize_per_tensor_affine`` (``--ops call``).

Effective GB/s counts the bytes a perfect kernel moves (forward: read x, write y; forward+backward:
also read the incoming gradient and write the input gradient; histogram: read x), the same for every
implementation, so the GB/s column ranks them. ``x clone`` is that GB/s over the GB/s of clone
(which copies x, and the gradient too for forward+backward) on the same tensor; ``vs torch`` is torch's built-in time over ours. Times are medians of ``--reps`` runs, the
implementations interleaved within each repetition so that machine noise hits them alike.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

from pytorch_quantization import _reference, ops, tensor_quant
from pytorch_quantization.nn import TensorQuantizer

OPS = ("per_tensor", "per_channel", "e4m3", "e4m3_scaled", "histogram", "call")
CALL_BYTES = 64 * 2 ** 10
CALLS_PER_SAMPLE = 100
# (op, pass, what is compared, target): "clone" targets are minimum GB/s ratios to clone, "torch" targets minimum
# speedups over torch's built-in, "call" a maximum per-call time ratio to torch's built-in
TARGETS = {
    "cpu": [("per_tensor", "fwd+bwd", "clone", 0.8), ("per_channel", "fwd+bwd", "clone", 0.8),
            ("e4m3", "fwd", "clone", 0.8), ("e4m3_scaled", "fwd", "clone", 0.8), ("call", "fwd", "call", 1.2)],
    "cuda": [("per_tensor", "fwd", "clone", 0.9), ("per_channel", "fwd", "clone", 0.85),
             ("per_tensor", "fwd+bwd", "clone", 0.8), ("per_channel", "fwd+bwd", "clone", 0.8),
             ("e4m3", "fwd", "clone", 0.8), ("e4m3_scaled", "fwd", "clone", 0.8), ("histogram", "fwd", "torch", 5.0),
             ("call", "fwd", "call", 1.2)],
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
QUICK_SIZES = ("64K", "1M", "16M")
FULL_SIZES = ("64K", "1M", "16M", "256M")
CHANNELS = 64
HISTOGRAM_BINS = 2048


def parse_size(text):
    """'64K' / '16M' / '1G' / '4096' -> bytes."""
    units = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}
    text = text.strip().upper().rstrip("IB")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not a byte count such as 64K, 16M or 1G") from None


def size_label(nbytes):
    for unit, factor in (("G", 2 ** 30), ("M", 2 ** 20), ("K", 2 ** 10)):
        if nbytes >= factor and nbytes % factor == 0:
            return f"{nbytes // factor}{unit}iB"
    return f"{nbytes}B"


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_interleaved(fns, device, reps, warmup):
    """{name: median seconds}; each repetition runs every function once, in turn."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    samples = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _forward_backward(quantize, x, grad):
    """Closure running ``quantize(x)`` forward and backward with ``grad``."""
    leaf = x.detach().requires_grad_()

    def run():
        leaf.grad = None
        quantize(leaf).backward(grad)

    return run


def fake_quant_cases(op, x, device):
    """{pass: {impl: fn}} for per-tensor / per-channel fake quant of x (amax axis 0 when per-channel)."""
    per_channel = op == "per_channel"
    cdt = _reference.compute_dtype(x.dtype)
    amax_1d = (torch.rand(CHANNELS if per_channel else 1, device=device) + 0.5).to(cdt)
    axis = 0 if per_channel else None
    amax = _reference.broadcast_amax(amax_1d, x.dim(), axis)
    scale = (amax_1d.float() / 127).to(torch.float32)
    grad = torch.randn_like(x)
    if per_channel:
        zero_point = torch.zeros(CHANNELS, dtype=torch.int32, device=device)

        def builtin(t):
            return torch.fake_quantize_per_channel_affine(t, scale, zero_point, 0, -127, 127)
    else:
        scale_value = float(scale)

        def builtin(t):
            return torch.fake_quantize_per_tensor_affine(t, scale_value, 0, -127, 127)

    forward = {"clone": x.clone, "reference": lambda: _reference.fake_quant(x, amax), "torch": lambda: builtin(x)}
    backward = {
        "clone": lambda: (x.clone(), grad.clone()),
        "reference": _forward_backward(lambda t: tensor_quant.legacy_fake_tensor_quant(t, amax), x, grad),
        "torch": _forward_backward(builtin, x, grad),
    }
    if ops.serves(device):
        forward["ours"] = lambda: torch.ops.pytorch_quantization.fake_quant(x, amax_1d, axis, 8, False, True)
        backward["ours"] = _forward_backward(lambda t: tensor_quant.fake_tensor_quant(t, amax), x, grad)
    return {"fwd": forward, "fwd+bwd": backward}


def e4m3_cases(x):
    forward = {"clone": x.clone, "reference": lambda: _reference.fake_e4m3(x)}
    if ops.serves(x.device.type):
        forward["ours"] = lambda: torch.ops.pytorch_quantization.fake_e4m3(x)
    return {"fwd": forward}


def e4m3_scaled_cases(x):
    """E4M3 scaled to a per-tensor amax (``tensor_quant.scaled_e4m3``): the one-pass op against the composite
    (multiply, cast, divide, select) it replaced; forward+backward through the autograd Function."""
    amax = x.abs().amax().float() * 0.5
    grad = torch.randn_like(x)
    forward = {"clone": x.clone, "reference": lambda: _reference.scaled_e4m3(x, amax)}
    backward = {"clone": lambda: (x.clone(), grad.clone())}
    if ops.serves(x.device.type):
        forward["ours"] = lambda: torch.ops.pytorch_quantization.scaled_e4m3(x, amax.reshape(1), None)
        backward["ours"] = _forward_backward(lambda t: tensor_quant.scaled_e4m3(t, amax), x, grad)
    return {"fwd": forward, "fwd+bwd": backward}


def histogram_cases(x):
    range_max = float(x.abs().max())
    forward = {
        "clone": x.clone,
        "reference": lambda: _reference.abs_histogram(x, HISTOGRAM_BINS, range_max),
        "torch": lambda: torch.histc(x.abs().float(), HISTOGRAM_BINS, 0, range_max),
    }
    if ops.serves(x.device.type):
        forward["ours"] = lambda: torch.ops.pytorch_quantization.abs_histogram(x, HISTOGRAM_BINS, range_max, False)
    return {"fwd": forward}


def call_cases(dtype, device):
    """Per-call cost on a small tensor: a TensorQuantizer forward (the whole Python path) against torch's op."""
    x = torch.randn(CALL_BYTES // torch.tensor([], dtype=dtype).element_size(), device=device).to(dtype)
    quantizer = TensorQuantizer(tensor_quant.QuantDescriptor(num_bits=8, amax=3.0)).to(device)

    def repeated(fn):
        def run():
            for _ in range(CALLS_PER_SAMPLE):
                fn()
        return run

    forward = {"clone": repeated(x.clone),
               "torch": repeated(lambda: torch.fake_quantize_per_tensor_affine(x, 3.0 / 127, 0, -128, 127))}
    if ops.serves(device):
        forward["ours"] = repeated(lambda: quantizer(x))
    return x, {"fwd": forward}


def nominal_bytes(op, pass_name, x):
    """Bytes a perfect kernel moves (see the module docstring)."""
    nbytes = x.numel() * x.element_size()
    if op == "histogram":
        return nbytes
    return 4 * nbytes if pass_name == "fwd+bwd" else 2 * nbytes


def clone_bytes(pass_name, x):
    """Bytes the clone baseline moves: x (forward), x and the gradient (forward+backward), read and written."""
    return (4 if pass_name == "fwd+bwd" else 2) * x.numel() * x.element_size()


def run_case(op, dtype, nbytes, device, reps, warmup):
    if op == "call":
        x, cases = call_cases(dtype, device)
        return _timed_rows(op, cases, x, device, reps, warmup, scale=CALLS_PER_SAMPLE)
    numel = max(CHANNELS, nbytes // torch.tensor([], dtype=dtype).element_size())
    x = (torch.randn(CHANNELS, numel // CHANNELS, device=device) * 2).to(dtype)
    if op in ("per_tensor", "per_channel"):
        cases = fake_quant_cases(op, x, device)
    elif op == "e4m3":
        cases = e4m3_cases(x)
    elif op == "e4m3_scaled":
        cases = e4m3_scaled_cases(x)
    else:
        cases = histogram_cases(x)
    return _timed_rows(op, cases, x, device, reps, warmup)


def _timed_rows(op, cases, x, device, reps, warmup, scale=1):
    """Rows of the table for ``cases`` ({pass: {impl: fn}}); ``scale`` calls per timed function."""
    rows = []
    for pass_name, fns in cases.items():
        runnable = {}
        for name, fn in fns.items():
            try:
                fn()
                runnable[name] = fn
            except (RuntimeError, NotImplementedError) as error:  # e.g. a built-in without this dtype
                print(f"  {op} {dtype} {name}: not run ({str(error).splitlines()[0][:80]})", file=sys.stderr)
        measured = time_interleaved(runnable, device, reps, warmup)
        times = {name: seconds / scale for name, seconds in measured.items()}
        gbps = {name: (clone_bytes(pass_name, x) if name == "clone" else nominal_bytes(op, pass_name, x)) / seconds / 1e9
                for name, seconds in times.items()}
        for name, seconds in times.items():
            rows.append({
                "op": op, "dtype": str(x.dtype).replace("torch.", ""), "bytes": x.numel() * x.element_size(),
                "size": size_label(x.numel() * x.element_size()), "pass": pass_name, "impl": name,
                "ms": seconds * 1e3, "gbps": gbps[name], "vs_clone": gbps[name] / gbps["clone"],
                "speedup_vs_torch": times["torch"] / seconds if "torch" in times and name == "ours" else None,
            })
    return rows


def summarize(rows, device):
    """[(description, measured, target, met)] for the targets of ``device``: float32, largest size measured."""
    out = []
    for op, pass_name, kind, target in TARGETS[device]:
        candidates = [r for r in rows if r["op"] == op and r["pass"] == pass_name and r["dtype"] == "float32"]
        if not candidates:
            continue
        largest = max(r["bytes"] for r in candidates)
        by_impl = {r["impl"]: r for r in candidates if r["bytes"] == largest}
        if "ours" not in by_impl:
            continue
        ours = by_impl["ours"]
        if kind == "clone":
            measured, met, text = ours["vs_clone"], ours["vs_clone"] >= target, f">= {target}x clone GB/s"
        elif kind == "torch":
            measured, met, text = ours["speedup_vs_torch"], ours["speedup_vs_torch"] >= target, f">= {target}x torch"
        else:
            measured = ours["ms"] / by_impl["torch"]["ms"]
            met, text = measured <= target, f"<= {target}x torch's per-call time"
        out.append({"op": op, "pass": pass_name, "size": ours["size"], "target": text, "measured": measured,
                    "met": bool(met)})
    return out


def print_summary(summary, file=sys.stdout):
    print("\ntargets (float32, largest size):", file=file)
    for s in summary:
        print(f"  {s['op']:<12}{s['pass']:<8}{s['size']:>8}  {s['measured']:6.2f}  target {s['target']:<34}"
              f"{'met' if s['met'] else 'NOT MET'}", file=file)


def print_table(rows, file=sys.stdout):
    header = f"{'op':<12}{'dtype':<10}{'size':>8} {'pass':<8}{'impl':<10}{'ms':>10}{'GB/s':>8}{'x clone':>9}{'vs torch':>9}"
    print(header, file=file)
    print("-" * len(header), file=file)
    for r in rows:
        speedup = f"{r['speedup_vs_torch']:.2f}x" if r["speedup_vs_torch"] else ""
        print(f"{r['op']:<12}{r['dtype']:<10}{r['size']:>8} {r['pass']:<8}{r['impl']:<10}{r['ms']:>10.3f}"
              f"{r['gbps']:>8.2f}{r['vs_clone']:>9.2f}{speedup:>9}", file=file)


def write_json(path, payload):
    """Write ``payload`` as JSON to ``path`` through a temporary file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=1)
    os.replace(handle.name, path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32", "float16"])
    parser.add_argument("--sizes", nargs="+", type=parse_size, help="tensor sizes in bytes, e.g. 64K 16M 256M")
    parser.add_argument("--full", action="store_true", help=f"sizes {' '.join(FULL_SIZES)} (default: quick, "
                        f"{' '.join(QUICK_SIZES)})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 5 quick, 11 full)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the rows and settings as JSON")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.sizes is None:
        args.sizes = [parse_size(s) for s in (FULL_SIZES if args.full else QUICK_SIZES)]
    if args.reps is None:
        args.reps = 11 if args.full else 5
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for op in args.ops:
        for dtype_name in args.dtypes:
            for nbytes in ([CALL_BYTES] if op == "call" else args.sizes):
                rows.extend(run_case(op, DTYPES[dtype_name], nbytes, args.device, args.reps, args.warmup))
    settings = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
                "compiled_ops": ops.serves(args.device), "cpu_vector_isa": ops.cpu_vector_isa(), "reps": args.reps}
    summary = summarize(rows, args.device)
    print(f"# {settings}")
    print_table(rows)
    print_summary(summary)
    if args.json:
        write_json(args.json, {"settings": settings, "rows": rows, "summary": summary})
    return rows


if __name__ == "__main__":
    main()
