"""Every vector copy of the CPU element loops (baseline, AVX2, AVX-512; ``csrc/cpu/vector_isa.h``) gives the
reference's bits. Each copy is selected in a fresh process with ``PYTORCH_QUANTIZATION_CPU_ISA`` (read once at load),
which runs fake quantization (per tensor, per channel with long and short channels, with mask, in place), the E4M3
casts, on every floating dtype and on lengths that leave a tail after the last full vector, against ``_reference``."""
import json
import os
import subprocess
import sys

import pytest

from pytorch_quantization import ops

pytestmark = pytest.mark.skipif(not ops.serves("cpu"), reason="compiled extension pytorch_quantization._C not built "
                                "(pip install -e . --no-build-isolation)")

LEVELS = ("baseline", "avx2", "avx512")

CHECK = r'''
import json, torch
from pytorch_quantization import _reference, ops
OPS = torch.ops.pytorch_quantization
INT_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}

def same_bits(a, b):
    nan = torch.isnan(b)
    return bool(torch.equal(torch.isnan(a), nan) and torch.equal(a[~nan].view(INT_VIEW[b.element_size()]),
                                                                 b[~nan].view(INT_VIEW[b.element_size()])))

g = torch.Generator().manual_seed(0)
failures = []
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    for n in (1, 15, 16, 33, 1000, 70001):
        x = (torch.randn(n, generator=g) * 3).to(dtype)
        x[0] = float("nan") if n > 20 else x[0]
        for bits, unsigned, narrow in ((8, False, True), (8, False, False), (4, False, False), (8, True, False)):
            xx = x.abs() if unsigned else x
            amax = torch.tensor([2.5])
            want = _reference.fake_quant(xx, amax, bits, unsigned, narrow)
            if not same_bits(OPS.fake_quant(xx, amax, None, bits, unsigned, narrow), want):
                failures.append(f"fake_quant {dtype} n={n} bits={bits}")
            out, mask = OPS.fake_quant_cachemask(xx, amax, None, bits, unsigned, narrow)
            want_out, want_mask = _reference.fake_quant_cachemask(xx, amax, bits, unsigned, narrow)
            if not (same_bits(out, want_out) and torch.equal(mask, want_mask)):
                failures.append(f"fake_quant_cachemask {dtype} n={n} bits={bits}")
            inplace = xx.clone()
            OPS.fake_quant_(inplace, amax, None, bits, unsigned, narrow)
            if not same_bits(inplace, want):
                failures.append(f"fake_quant_ {dtype} n={n} bits={bits}")
        if not same_bits(OPS.fake_e4m3(x), _reference.fake_e4m3(x)):
            failures.append(f"fake_e4m3 {dtype} n={n}")
        if not same_bits(OPS.scaled_e4m3(x, torch.tensor([3.0]), None), _reference.scaled_e4m3(x, torch.tensor(3.0))):
            failures.append(f"scaled_e4m3 {dtype} n={n}")
    for channels, inner in ((6, 700), (70, 3)):  # long runs per channel, and short ones (per-element constants)
        x = (torch.randn(5, channels, inner, generator=g) * 2).to(dtype)
        amax = torch.rand(channels, generator=g) * 3 + 0.1
        want = _reference.fake_quant(x, amax.reshape(1, channels, 1), 8, False, True)
        if not same_bits(OPS.fake_quant(x, amax, 1, 8, False, True), want):
            failures.append(f"fake_quant per-channel {dtype} {channels}x{inner}")
print(json.dumps({"isa": ops.cpu_vector_isa(), "failures": failures}))
'''


def run_with(level):
    env = dict(os.environ, PYTORCH_QUANTIZATION_CPU_ISA=level, OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("level", LEVELS)
def test_each_vector_copy_gives_the_reference_bits(level):
    available = ops.cpu_vector_isa()
    if LEVELS.index(level) > LEVELS.index(available):
        pytest.skip(f"this CPU runs at most the {available} copy")
    result = run_with(level)
    assert result["isa"] == level
    assert result["failures"] == []


def test_an_unknown_setting_is_ignored_with_a_warning():
    env = dict(os.environ, PYTORCH_QUANTIZATION_CPU_ISA="sse9")
    done = subprocess.run([sys.executable, "-c", "from pytorch_quantization import ops; print(ops.cpu_vector_isa())"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ops.cpu_vector_isa()
    assert "PYTORCH_QUANTIZATION_CPU_ISA=sse9 is not one of baseline, avx2, avx512" in done.stderr
