"""ONNX export through both torch exporters: the default (torch.export-based) one and the TorchScript one.

Every export must hold standard QuantizeLinear/DequantizeLinear pairs (no op of this package), pass
onnx.checker, and run in onnxruntime within one quantization step of the fake-quantized model.
"""
import io

import pytest
import torch

from pytorch_quantization import enable_onnx_export
from pytorch_quantization import nn as quant_nn
from pytorch_quantization.tensor_quant import QuantDescriptor

onnx = pytest.importorskip("onnx", reason="onnx is needed to check the exported graph")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the exported graph")

EXPORTERS = ["default", "torchscript"]


def _export(model, x, exporter):
    if exporter == "default":
        pytest.importorskip("onnxscript", reason="torch's default ONNX exporter needs onnxscript")
    buffer = io.BytesIO()
    with enable_onnx_export():
        if exporter == "default":
            torch.onnx.export(model, (x,), buffer, opset_version=17, input_names=["x"], output_names=["y"])
        else:
            torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"],
                              output_names=["y"])
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    assert not [n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx")], "non-standard ops"
    return proto, buffer.getvalue()


def _calibrate(model, x):
    quantizers = [m for m in model.modules() if isinstance(m, quant_nn.TensorQuantizer)]
    for q in quantizers:
        q.enable_calib()
        q.disable_quant()
    with torch.no_grad():
        model(x)
    for q in quantizers:
        q.load_calib_amax(strict=False)  # the input quantizer of a weight-only layer sees nothing
        q.disable_calib()
        q.enable_quant()


def _qdq(proto):
    q_nodes = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    return q_nodes, dq_nodes


def _per_channel_axes(proto, nodes):
    """Sorted ``axis`` of the nodes whose scale is a vector (per-channel); per-tensor nodes are left out."""
    proto = onnx.shape_inference.infer_shapes(proto)
    ranks = {init.name: len(init.dims) for init in proto.graph.initializer}
    ranks.update({v.name: len(v.type.tensor_type.shape.dim) for v in proto.graph.value_info})
    ranks.update({n.output[0]: len(n.attribute[0].t.dims) for n in proto.graph.node if n.op_type == "Constant"})
    axes = []
    for node in nodes:
        if ranks[node.input[1]] == 1:
            axes.append(next((a.i for a in node.attribute if a.name == "axis"), 1))  # ONNX's default axis is 1
    return sorted(axes)


def _one_step_tolerance(layer, x):
    """Output change bound when every quantized input and weight element moves by at most one step."""
    with torch.no_grad():
        x_q = layer.input_quantizer(x).float() if layer.quant_act else x.float()
        w_q = layer.weight_quantizer(layer.weight).float()
    w_step = (layer.weight_quantizer.amax.float() / layer.weight_quantizer.maxbound).max().item()
    in_step = layer.input_quantizer.amax.item() / layer.input_quantizer.maxbound if layer.quant_act else 0.0
    # a linear layer output is sum_i x_i w_ji: one step of x moves it by step * sum |w|, one step of w by step * sum |x|
    return in_step * w_q.abs().sum(dim=1).max().item() + w_step * x_q.abs().sum(dim=-1).max().item()


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("dtype, per_channel, unsigned, narrow", [
    (torch.float32, False, False, False),
    (torch.float32, True, False, True),
    (torch.float32, True, True, False),
    (torch.float16, True, False, False),
    (torch.float16, False, True, True),
    (torch.bfloat16, True, False, False),
], ids=["fp32-tensor", "fp32-channel-narrow", "fp32-channel-unsigned", "fp16-channel", "fp16-tensor-unsigned-narrow",
        "bf16-channel"])
def test_linear_exports_qdq_and_matches_onnxruntime(exporter, dtype, per_channel, unsigned, narrow):
    torch.manual_seed(0)
    layer = quant_nn.QuantLinear(16, 8, quant_desc_input=QuantDescriptor(unsigned=unsigned, narrow_range=narrow),
                                 quant_desc_weight=QuantDescriptor(axis=0 if per_channel else None,
                                                                   narrow_range=narrow)).eval()
    x = torch.randn(4, 16)
    x = x.abs() if unsigned else x
    _calibrate(layer, x)
    layer = layer.to(dtype)
    x = x.to(dtype)
    proto, raw = _export(layer, x, exporter)
    q_nodes, dq_nodes = _qdq(proto)
    assert len(q_nodes) == 2 and len(dq_nodes) == 2
    assert _per_channel_axes(proto, dq_nodes) == ([0] if per_channel else [])  # weight [out, in]: along axis 0
    if dtype == torch.bfloat16:
        return  # onnxruntime's CPU provider has no bfloat16 MatMul/Gemm: checked by onnx.checker only
    got = torch.from_numpy(ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
                           .run(["y"], {"x": x.numpy()})[0]).float()
    with torch.no_grad():
        want = layer(x).float()
    atol = _one_step_tolerance(layer, x) + (1e-2 if dtype == torch.float16 else 1e-5)
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("cls, shape", [(quant_nn.QuantConvTranspose1d, (1, 4, 5)),
                                        (quant_nn.QuantConvTranspose2d, (1, 4, 5, 5))])
def test_conv_transpose_weight_dequantizes_along_axis_1(exporter, cls, shape):
    """A transposed convolution's weight is [in, out, k...]: its per-channel Q/DQ runs along axis 1."""
    torch.manual_seed(0)
    layer = cls(4, 6, 2, stride=2).eval()
    x = torch.randn(shape)
    _calibrate(layer, x)
    proto, raw = _export(layer, x, exporter)
    q_nodes, dq_nodes = _qdq(proto)
    assert len(q_nodes) == 2 and len(dq_nodes) == 2
    assert _per_channel_axes(proto, dq_nodes) == [1]  # input per tensor, weight per output channel
    got = torch.from_numpy(ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
                           .run(["y"], {"x": x.numpy()})[0])
    with torch.no_grad():
        want = layer(x)
    in_step = layer.input_quantizer.amax.item() / 127
    w_step = (layer.weight_quantizer.amax / 127).max().item()
    with torch.no_grad():
        w_q = layer.weight_quantizer(layer.weight)
        x_q = layer.input_quantizer(x)
    # each output element sums at most in_channels * kernel elements of x * w
    atol = in_step * w_q.abs().sum().item() + w_step * x_q.abs().sum().item()
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_weight_only_exports_weight_qdq_only(exporter):
    torch.manual_seed(0)
    layer = quant_nn.QuantLinear(16, 8, quant_act=False).eval()
    x = torch.randn(4, 16)
    _calibrate(layer, x)
    proto, raw = _export(layer, x, exporter)
    q_nodes, dq_nodes = _qdq(proto)
    assert len(q_nodes) == 1 and len(dq_nodes) == 1
    assert "x" not in q_nodes[0].input  # the graph input reaches the matmul unquantized
    got = torch.from_numpy(ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
                           .run(["y"], {"x": x.numpy()})[0])
    with torch.no_grad():
        want = layer(x)
    torch.testing.assert_close(got, want, rtol=0, atol=_one_step_tolerance(layer, x) + 1e-5)


def test_default_exporter_needs_calibrated_ranges():
    pytest.importorskip("onnxscript", reason="torch's default ONNX exporter needs onnxscript")
    layer = quant_nn.QuantLinear(4, 2).eval()
    with pytest.raises(RuntimeError, match="load_calib_amax"):
        _export(layer, torch.randn(1, 4), "default")


def test_without_onnxscript_an_export_that_chooses_no_exporter_uses_torchscript(monkeypatch):
    """torch's default exporter needs onnxscript; inside enable_onnx_export() a plain torch.onnx.export call
    falls back to the TorchScript-based exporter instead of failing, and torch.onnx.export is restored after."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else
                        find_spec(name, *a))
    original = torch.onnx.export
    torch.manual_seed(0)
    layer = quant_nn.QuantLinear(16, 8).eval()
    x = torch.randn(4, 16)
    _calibrate(layer, x)
    buffer = io.BytesIO()
    with enable_onnx_export():
        torch.onnx.export(layer, (x,), buffer, opset_version=17, input_names=["x"], output_names=["y"])
    assert torch.onnx.export is original
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    assert [len(nodes) for nodes in _qdq(proto)] == [2, 2]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_e4m3_exports_float8_casts(exporter):
    torch.manual_seed(0)
    layer = quant_nn.QuantLinear(16, 8, quant_desc_input=QuantDescriptor(num_bits=(4, 3)),
                                 quant_desc_weight=QuantDescriptor(num_bits=(4, 3), axis=0)).eval()
    x = torch.randn(4, 16)
    _calibrate(layer, x)
    proto, _ = _export(layer, x, exporter)
    to_types = [a.i for n in proto.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    # the input's fake cast; the weight's may be folded into a constant by the exporter
    assert to_types.count(onnx.TensorProto.FLOAT8E4M3FN) >= 1
