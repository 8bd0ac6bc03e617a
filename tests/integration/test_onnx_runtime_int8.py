"""integration/driver/onnx_runtime.py: TensorRT-style Q/DQ export of every layer type of CenterPoint-pillar's dense
part (PFN Linear, Conv2d, ConvTranspose2d, head convs, a quantized residual add), the files the export command
writes, and onnxruntime INT8 execution of the lowered graph against the fake-quantized torch model."""
import json
import os

import numpy as np
import pytest
import torch

from pytorch_quantization import ptq
from pytorch_quantization import nn as quant_nn
from pytorch_quantization.tensor_quant import QuantDescriptor

onnx = pytest.importorskip("onnx", reason="onnx is needed to export and check graphs")
pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the exported graphs")
from onnx import numpy_helper  # noqa: E402  pylint: disable=wrong-import-position
from integration.driver import onnx_runtime  # noqa: E402  pylint: disable=wrong-import-position


class Pfn(torch.nn.Module):
    """The pillar feature net's layer: Linear over (pillars, points, features), ReLU, max over the points."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(10, 16)

    def forward(self, x):
        return torch.relu(self.linear(x)).max(dim=1).values


def output_quantizer():
    """The next layer's input quantizer, standing at the end so that the graph's output is quantized."""
    return quant_nn.TensorQuantizer(QuantDescriptor(num_bits=8))


def build(kind):
    """``(quantized, calibrated model, example input)`` of one layer type, quantized with the w8a8 preset."""
    torch.manual_seed(0)
    if kind == "pfn_linear":
        model, shape = Pfn(), (64, 8, 10)
    elif kind == "conv2d":
        model, shape = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU()), (1, 8, 20, 20)
    elif kind == "conv_transpose2d":
        model, shape = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 12, 2, stride=2), torch.nn.ReLU()), \
            (1, 8, 10, 10)
    else:  # head_conv: the head's last conv, whose float output leaves the graph
        model, shape = torch.nn.Sequential(torch.nn.Conv2d(8, 3, 3, padding=1)), (1, 8, 20, 20)
    ptq.quantize_model(model, "w8a8")
    if kind in ("conv2d", "conv_transpose2d"):
        model.append(output_quantizer())
    model.eval()
    batches = [torch.randn(shape).abs() if kind != "pfn_linear" else torch.randn(shape) for _ in range(3)]
    ptq.calibrate(model, batches)
    return model, batches[1]


def quant_layer(model):
    return next(m for m in model.modules() if hasattr(m, "_weight_quantizer"))


def graph_values(proto):
    values = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def producer(proto, name):
    return next(n for n in proto.graph.node if name in n.output)


def axis_of(node):
    return next((a.i for a in node.attribute if a.name == "axis"), None)


def export(model, x):
    """Exported as the driver does: the leading size dynamic (the PFN's number of pillars)."""
    dynamic = {"x": {0: "n"}, "y": {0: "n"}}
    return onnx_runtime.Graph("g", onnx_runtime.export_module(model, (x,), ["x"], ["y"], dynamic))


LAYER_OP = {"pfn_linear": "MatMul", "conv2d": "Conv", "conv_transpose2d": "ConvTranspose", "head_conv": "Conv"}


@pytest.mark.parametrize("kind", list(LAYER_OP))
def test_layer_exports_trt_qdq_with_the_quantizers_axis_and_scales(kind):
    model, x = build(kind)
    layer = quant_layer(model)
    proto = onnx.load_from_string(export(model, x).onnx)
    onnx.checker.check_model(proto)
    values = graph_values(proto)
    (op,) = [n for n in proto.graph.node if n.op_type == LAYER_OP[kind]]
    data_dq = producer(proto, op.input[0])
    assert data_dq.op_type == "DequantizeLinear"
    np.testing.assert_allclose(values[data_dq.input[1]], layer.input_quantizer.amax.item() / 127, rtol=1e-6)
    weight_dq = producer(proto, op.input[1])
    if weight_dq.op_type == "Transpose":  # Linear: MatMul reads the transposed weight
        weight_dq = producer(proto, weight_dq.input[0])
    assert weight_dq.op_type == "DequantizeLinear"
    # per output channel, on the axis the layer's weight quantizer uses (1 for transposed convolutions)
    assert axis_of(weight_dq) == layer.weight_quantizer.axis
    w = layer.weight.detach()
    axis = layer.weight_quantizer.axis
    expected = w.abs().transpose(0, axis).reshape(w.shape[axis], -1).amax(dim=1) / 127
    np.testing.assert_allclose(values[weight_dq.input[1]], expected.numpy(), rtol=1e-6)
    assert values[weight_dq.input[2]].dtype == np.int8 and not values[weight_dq.input[2]].any()


def one_input_step_bound(layer):
    """Largest change of any output when every quantized input moves by one step: step * max_j sum_i |w_q[j, i]|."""
    with torch.no_grad():
        w_q = layer.weight_quantizer(layer.weight)
    axis = layer.weight_quantizer.axis
    per_output = w_q.abs().transpose(0, axis).reshape(w_q.shape[axis], -1).sum(dim=1).max().item()
    return layer.input_quantizer.amax.item() / 127 * per_output


@pytest.mark.parametrize("kind", list(LAYER_OP))
def test_onnxruntime_int8_matches_fake_quant_within_one_step(kind):
    model, x = build(kind)
    graph = export(model, x)
    run = onnx_runtime.OrtGraph(graph, threads=1)
    got = run(x)[0].numpy()
    with torch.no_grad():
        want = model(x).numpy()
    if kind in ("conv2d", "conv_transpose2d"):
        step = model[-1].amax.item() / 127  # the output is quantized: at most one step apart, mostly equal
        codes_got, codes_want = np.round(got / step), np.round(want / step)  # the integers (q / scale and
        assert np.abs(codes_got - codes_want).max() <= 1                      # q * scale differ in the last bit)
        assert np.mean(codes_got == codes_want) > 0.99
    else:  # float output: one step of the quantized input, through the layer's weights
        np.testing.assert_allclose(got, want, rtol=0, atol=one_input_step_bound(quant_layer(model)) + 1e-5)
    counts = onnx_runtime.kernel_counts(run.onnx)
    if kind == "conv2d":
        assert counts["QLinearConv"] == 1 and counts["Conv"] + counts["FusedConv"] == 0, counts
    if kind == "pfn_linear":
        assert counts["MatMulIntegerToFloat"] + counts["QLinearMatMul"] == 1, counts


def test_lowering_keeps_every_value_of_the_graph():
    """The rewrite for onnxruntime (uint8 activations, ReLU as a Clip of the quantized integers) computes what the
    TensorRT-style graph computes, bit for bit, in onnxruntime itself."""
    model, x = build("conv2d")
    graph = export(model, x)
    lowered = onnx.load_from_string(onnx_runtime.lower_for_onnxruntime(graph.onnx))
    ops = [n.op_type for n in lowered.graph.node]
    assert "Relu" not in ops and ops.count("Clip") == 1
    as_exported = onnx_runtime.OrtGraph(graph, threads=1, lower=False)(x)[0]
    as_lowered = onnx_runtime.OrtGraph(graph, threads=1)(x)[0]
    assert torch.equal(as_exported, as_lowered)


def test_quantized_residual_add_has_one_scale_on_both_operands():
    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.add = ptq.QuantAdd()

        def forward(self, x):
            return self.add(torch.relu(self.conv(x)), x)

    torch.manual_seed(0)
    model = Residual()
    ptq.quantize_model(model, "w8a8")
    batches = [torch.randn(1, 4, 8, 8) for _ in range(2)]
    ptq.calibrate(model.eval(), batches)
    proto = onnx.load_from_string(export(model, batches[0]).onnx)
    values = graph_values(proto)
    (add,) = [n for n in proto.graph.node if n.op_type == "Add"]
    dqs = [producer(proto, name) for name in add.input]
    assert [d.op_type for d in dqs] == ["DequantizeLinear", "DequantizeLinear"]
    scales = [values[d.input[1]].item() for d in dqs]
    assert scales[0] == scales[1] == pytest.approx(model.add.input_quantizer.amax.item() / 127, rel=1e-6)
    with torch.no_grad():
        want = model(batches[1]).numpy()
    got = onnx_runtime.OrtGraph(export(model, batches[0]), threads=1)(batches[1])[0].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * scales[0] + 1e-6)  # each operand within one step


def test_write_graphs_files_io_json_and_checker(tmp_path):
    model, x = build("pfn_linear")
    dynamic = {"voxels": {0: "pillars"}, "features": {0: "pillars"}}
    graph = onnx_runtime.Graph("pfn", onnx_runtime.export_module(model, (x,), ["voxels"], ["features"], dynamic))
    doc = onnx_runtime.write_graphs(str(tmp_path / "out"), [graph], extra={"mode": "w8a8"})
    assert sorted(os.listdir(tmp_path / "out")) == ["io.json", "pfn.onnx"]
    with open(tmp_path / "out" / "io.json") as f:
        assert json.load(f) == doc
    entry = doc["graphs"]["pfn"]
    assert entry["inputs"] == [{"name": "voxels", "dtype": "float32", "shape": ["pillars", 8, 10]}]
    assert entry["outputs"] == [{"name": "features", "dtype": "float32", "shape": ["pillars", 16]}]
    assert doc["mode"] == "w8a8" and entry["opset"] == 13
    onnx.checker.check_model(str(tmp_path / "out" / "pfn.onnx"), full_check=True)
