"""ONNX export of a calibrated quantized CNN to QuantizeLinear/DequantizeLinear pairs, run by onnxruntime."""
import io

import numpy as np
import pytest
import torch

from pytorch_quantization import nn as quant_nn
from pytorch_quantization import quant_modules

onnx = pytest.importorskip("onnx", reason="onnx is needed to check the exported graph")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the exported graph")
from onnx import numpy_helper  # noqa: E402  pylint: disable=wrong-import-position


def small_cnn(quant_act):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        quant_nn.QuantConv2d(3, 4, 3, padding=1, quant_act=quant_act),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        quant_nn.QuantMaxPool2d(2, quant_act=quant_act),
        torch.nn.Flatten(),
        quant_nn.QuantLinear(64, 5, quant_act=quant_act),
    ).eval()


def calibrate(model, batches):
    quantizers = [m for m in model.modules() if isinstance(m, quant_nn.TensorQuantizer)]
    for q in quantizers:
        q.enable_calib()
        q.disable_quant()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for q in quantizers:
        q.load_calib_amax(strict=False)
        q.disable_calib()
        q.enable_quant()


def export(model, x):
    buffer = io.BytesIO()
    with quant_modules.enable_onnx_export():
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=13, input_names=["x"],
                          output_names=["y"])
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return proto, buffer.getvalue()


def constants(proto):
    """name -> numpy value of every initializer and Constant node output."""
    values = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def axis_of(node):
    for attr in node.attribute:
        if attr.name == "axis":
            return attr.i
    return None


@pytest.fixture(name="batches")
def fixture_batches():
    torch.manual_seed(1)
    return [torch.randn(2, 3, 8, 8) for _ in range(3)]


@pytest.fixture(name="native_route", params=[False, True], ids=["package-kernels", "use_fb_fake_quant"])
def fixture_native_route(request):
    """Quantize with the package's kernels or with torch.fake_quantize_* (upstream's use_fb_fake_quant)."""
    quant_nn.TensorQuantizer.use_fb_fake_quant = request.param
    yield request.param
    quant_nn.TensorQuantizer.use_fb_fake_quant = False


def test_calibrated_cnn_exports_qdq_and_matches_onnxruntime(batches, native_route):  # pylint: disable=unused-argument
    model = small_cnn(quant_act=True)
    calibrate(model, batches)
    x = batches[0]
    proto, raw = export(model, x)
    q_nodes = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    # inputs of conv, pool and linear + weights of conv and linear
    assert len(q_nodes) == 5 and len(dq_nodes) == 5

    values = constants(proto)
    per_channel = [n for n in q_nodes if values[n.input[1]].size > 1]
    per_tensor = [n for n in q_nodes if values[n.input[1]].size == 1]
    assert len(per_channel) == 2 and len(per_tensor) == 3
    assert all(axis_of(n) == 0 for n in per_channel)
    weight_scales = sorted((values[n.input[1]] for n in per_channel), key=len)
    for scale, weight in zip(weight_scales, (model[0].weight, model[5].weight)):  # conv has 4 channels, linear 5
        expected = weight.detach().abs().flatten(1).amax(dim=1).numpy() / 127
        np.testing.assert_allclose(scale, expected, rtol=1e-6)
    first_input_scale = values[per_tensor[0].input[1]]
    np.testing.assert_allclose(first_input_scale, torch.cat(batches).abs().max().item() / 127, rtol=1e-6)

    session = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    got = session.run(["y"], {"x": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    # ONNX rounds x / scale, the package's kernels x * (127 / amax): they may differ by one step on a few elements;
    # a one-step change of every input of the last layer moves output j by at most step * sum_i |w_q[j, i]|
    linear = model[5]
    step = linear.input_quantizer.amax.item() / 127
    with torch.no_grad():
        w_q = linear.weight_quantizer(linear.weight)
    tolerance = step * w_q.abs().sum(dim=1).max().item()
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)


def test_weight_only_model_exports_weight_qdq_only(batches):
    model = small_cnn(quant_act=False)
    calibrate(model, batches)
    proto, raw = export(model, batches[0])
    q_nodes = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert len(q_nodes) == 2 and len(dq_nodes) == 2
    values = constants(proto)
    assert all(values[n.input[1]].size > 1 and axis_of(n) == 0 for n in q_nodes)
    # the graph input reaches the first conv unquantized
    consumers = [n.op_type for n in proto.graph.node if "x" in n.input]
    assert consumers == ["Conv"]
    session = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    got = session.run(["y"], {"x": batches[1].numpy()})[0]
    with torch.no_grad():
        want = model(batches[1]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_export_without_calibration_names_the_fix():
    model = small_cnn(quant_act=True)
    with pytest.raises(RuntimeError, match="load_calib_amax"):
        export(model, torch.randn(1, 3, 8, 8))
    assert quant_nn.TensorQuantizer._enable_onnx_export is False  # pylint: disable=protected-access
