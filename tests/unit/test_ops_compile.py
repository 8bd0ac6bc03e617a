"""The Python glue of the compiled ops: tracing support in ``ops`` (fake kernels, autograd) for
torch.compile / torch.export, and the upstream-compatible ``cuda_ext`` module."""
import os
import subprocess
import sys

import pytest
import torch

from pytorch_quantization import _reference, cuda_ext, ops, tensor_quant

needs_compiled = pytest.mark.skipif(not ops.serves("cpu"), reason="compiled extension pytorch_quantization._C not "
                                    "built (pip install -e . --no-build-isolation)")
OPS = torch.ops.pytorch_quantization if ops.serves("cpu") else None
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _inputs(seed=0, shape=(4, 6, 5)):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen) * 2


@needs_compiled
@pytest.mark.parametrize("name,args", [
    ("fake_quant", lambda x: (x, torch.tensor([1.5]), None, 8, False, True)),
    ("fake_quant", lambda x: (x, torch.rand(6) + 0.5, 1, 4, False, False)),
    ("fake_quant_cachemask", lambda x: (x, torch.rand(5) + 0.5, 2, 8, False, True)),
    ("fake_quant_", lambda x: (x.clone(), torch.tensor([1.0]), None, 8, False, True)),
    ("ste_grad", lambda x: (x, x > 0)),
    ("fake_e4m3", lambda x: (x * 100,)),
    ("abs_histogram", lambda x: (x, 16, 3.0, True)),
])
def test_opcheck_schema_fake_kernel_and_autograd_registration(name, args):
    x = _inputs()
    if name in ("fake_quant", "fake_quant_cachemask"):
        x.requires_grad_()
    torch.library.opcheck(getattr(OPS, name).default, args(x))


@needs_compiled
def test_compile_fullgraph_through_fake_tensor_quant():
    amax = torch.tensor([[1.0], [2.0], [0.5], [1.5]]).reshape(4, 1, 1)

    def quantize(x):
        return tensor_quant.fake_tensor_quant(x, amax, 8) * 2

    compiled = torch.compile(quantize, fullgraph=True, backend="aot_eager")
    x = _inputs(1).requires_grad_()
    out = compiled(x)
    assert torch.equal(out, _reference.fake_quant(x.detach(), amax) * 2)
    out.sum().backward()
    assert torch.equal(x.grad, 2 * (x.detach().abs() <= amax).float())


@needs_compiled
def test_compile_fullgraph_raw_ops():
    def pipeline(x, amax):
        out, mask = OPS.fake_quant_cachemask(x, amax, 0, 8, False, True)
        return OPS.fake_e4m3(out) + mask, OPS.abs_histogram(x, 8, 2.0, False)

    compiled = torch.compile(pipeline, fullgraph=True, backend="aot_eager")
    x, amax = _inputs(2), torch.rand(4) + 0.5
    got, hist = compiled(x, amax)
    expected_out = _reference.fake_quant(x, amax.reshape(4, 1, 1))
    expected_mask = x.abs() <= amax.reshape(4, 1, 1)
    assert torch.equal(got, _reference.fake_e4m3(expected_out) + expected_mask)
    assert torch.equal(hist, _reference.abs_histogram(x, 8, 2.0))


@needs_compiled
def test_compile_fullgraph_in_place_op():
    def quantize_(x):
        OPS.fake_quant_(x, torch.tensor([1.0]), None, 4, False, False)
        return x

    x = _inputs(3)
    expected = _reference.fake_quant(x, torch.tensor(1.0), 4, False, False)
    out = torch.compile(quantize_, fullgraph=True, backend="aot_eager")(x)
    assert torch.equal(out, expected) and torch.equal(x, expected)


@needs_compiled
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_compile_fullgraph_through_a_quantized_conv(grad):
    """The per-call reuse paths (weight cache, shared input, direct kernel) step aside under torch.compile: a whole
    QuantConv2d traces into one graph and computes what eager mode computes."""
    from pytorch_quantization import nn as quant_nn  # pylint: disable=import-outside-toplevel
    conv = quant_nn.QuantConv2d(3, 4, 3).eval()
    conv.input_quantizer.amax = 2.0
    conv.weight_quantizer.amax = conv.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True) * 0.8
    x = _inputs(5, (1, 3, 8, 8))
    with torch.set_grad_enabled(grad):
        eager = conv(x)
        compiled = torch.compile(conv, fullgraph=True, backend="aot_eager")
        assert torch.equal(compiled(x), eager)
        assert torch.equal(compiled(x), eager)  # a second call: eager would now hit the caches


class _QuantLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(5, 3)
        self.register_buffer("amax", torch.tensor([2.0]))

    def forward(self, x):
        return self.linear(OPS.fake_quant(x, self.amax, None, 8, False, True))


@needs_compiled
def test_export_captures_the_op():
    module = _QuantLinear().eval()
    x = _inputs(4, (2, 5))
    exported = torch.export.export(module, (x,))
    targets = [node.target for node in exported.graph.nodes if node.op == "call_function"]
    assert torch.ops.pytorch_quantization.fake_quant.default in targets
    assert torch.equal(exported.module()(x), module(x))


def test_serves_agrees_with_the_dispatcher():
    for device, key in (("cpu", "CPU"), ("cuda", "CUDA")):
        registered = ops.LOAD_ERROR is None and torch._C._dispatch_has_kernel_for_dispatch_key(  # noqa: SLF001
            "pytorch_quantization::fake_quant", key)
        assert ops.serves(device) == registered
    assert not ops.serves("mps")


def test_cuda_ext_upstream_functions_match_reference():
    x = _inputs(5)
    amax = torch.tensor([1.5])
    assert torch.equal(cuda_ext.fake_tensor_quant(x, amax), _reference.fake_quant(x, amax.reshape(())))
    assert torch.equal(cuda_ext.fake_tensor_quant(x.abs(), amax, 4, True, False),
                       _reference.fake_quant(x.abs(), amax.reshape(()), 4, True, False))
    per_channel = torch.rand(6) + 0.5
    for axis in (1, -2):
        assert torch.equal(cuda_ext.fake_tensor_quant_with_axis(x, per_channel, axis, num_bits=6, narrow_range=False),
                           _reference.fake_quant(x, per_channel.reshape(1, 6, 1), 6, False, False))
    view = x.clone().transpose(0, 2)  # upstream rejected non-contiguous in-place input
    expected = _reference.fake_quant(view, amax.reshape(()))
    assert cuda_ext.fake_tensor_quant_(view, amax) is None
    assert torch.equal(view, expected)
    assert torch.equal(cuda_ext.fake_e4m3fy(x * 300), _reference.fake_e4m3(x * 300))


def test_cuda_ext_bad_arguments():
    x = _inputs(6)
    with pytest.raises(ValueError, match="one element for per-tensor"):
        cuda_ext.fake_tensor_quant(x, torch.ones(2))
    with pytest.raises(ValueError, match="amax has 3 elements but inputs have 6 along axis 1"):
        cuda_ext.fake_tensor_quant_with_axis(x, torch.ones(3), 1)
    with pytest.raises(ValueError, match="axis must be an int"):
        cuda_ext.fake_tensor_quant_with_axis(x, torch.ones(4), 3)
    with pytest.raises(TypeError, match="floating point"):
        cuda_ext.fake_e4m3fy(torch.ones(3, dtype=torch.int32))


def test_missing_extension_warns_once_and_falls_back_to_reference():
    script = (
        "import sys, warnings\n"
        "sys.modules['pytorch_quantization._C'] = None  # makes the import fail as if it were not built\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import torch\n"
        "    from pytorch_quantization import kernels, ops\n"
        "    import pytorch_quantization.ops\n"
        "hints = [w for w in caught if 'pip install -e . --no-build-isolation' in str(w.message)]\n"
        "assert len(hints) == 1, [str(w.message) for w in caught]\n"
        "assert not ops.serves('cpu') and kernels.kernel_backend()['cpu'] == 'reference'\n"
        "x = torch.tensor([0.26, -1.0, 3.0])\n"
        "print(kernels.fake_quant(x, torch.tensor(1.0), 2).tolist())\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": REPO_ROOT}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "[0.0, -1.0, 1.0]"  # 2 bits: grid {-1, 0, 1} * amax
