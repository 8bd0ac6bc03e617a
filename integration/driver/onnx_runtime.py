"""ONNX graphs of a model's dense part: TensorRT-style export files, and real INT8 execution with onnxruntime.

A ``Graph`` is one exported ONNX model (``name``, serialized ``onnx`` bytes). The export is
what TensorRT expects from pytorch-quantization: QuantizeLinear/DequantizeLinear pairs on the inputs of every
quantized layer (activations per tensor, weights per output channel with the axis each weight quantizer uses),
INT8 symmetric, zero point 0. ``write_graphs`` writes them with a JSON of input/output names and shapes, each file
checked by ``onnx.checker``.

onnxruntime's CPU provider runs such a graph with INT8 kernels only where it can fuse ``DQ -> Conv -> Q`` into
``QLinearConv`` (``DQ -> MatMul -> Q`` into ``QLinearMatMul``, ``DQ -> MatMul`` into ``MatMulIntegerToFloat``), and on
x86 only with unsigned 8-bit activations. The TensorRT placement defeats that twice: a ReLU sits between each
conv and the Q of the next layer, and the activations are signed. ``lower_for_onnxruntime`` rewrites the graph
without changing what it computes:

* a per-tensor activation pair ``Q(int8, scale, 0) -> DQ`` becomes ``Q(uint8, scale, 128) -> DQ``: the same
  integers shifted by 128, the same dequantized values;
* ``Relu -> Q`` becomes ``Q -> Clip(min = zero point)``: clamping the integer at the zero point is the ReLU
  applied before quantizing, exactly (``round`` and ``clamp`` are monotonic, and 0 maps to the zero point).

Layers whose output is not quantized (the head's last convs, whose outputs leave the graph) and layers whose output
feeds several differently-scaled quantizers stay float convolutions on dequantized inputs: that is the same
arithmetic as the fake-quantized model. ``kernel_counts`` reads the graph onnxruntime actually runs (its optimized
model) so the run can say how many layers took the INT8 path.
"""
import collections
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from pytorch_quantization.ptq.atomic_io import atomic_write, atomic_write_text

__all__ = ["Graph", "export_module", "lower_for_onnxruntime", "OrtGraph", "kernel_counts", "INT8_KERNELS", "describe_kernels", "median_ms",
           "write_graphs"]

#: operator types of onnxruntime's optimized graph that compute in 8-bit integers
INT8_KERNELS = ("QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "QLinearConvTranspose", "QLinearAdd",
                "QLinearConcat")
_FLOAT_KERNELS = ("Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "Add")

Graph = collections.namedtuple("Graph", "name onnx")


def export_module(module, args, input_names, output_names, dynamic_axes=None, opset=13):
    """Serialized ONNX of ``module(*args)`` with Q/DQ for its quantizers: torch's TorchScript-based exporter
    (``dynamo=False``) inside ``quant_modules.enable_onnx_export()``, no gradients."""
    import io
    from pytorch_quantization import quant_modules
    buffer = io.BytesIO()
    with quant_modules.enable_onnx_export(), torch.no_grad():
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes)
    return buffer.getvalue()


def _constants(graph):
    """name -> numpy value of every initializer and Constant node output of ``graph``."""
    from onnx import numpy_helper
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _consumers(graph):
    users = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def _activations_to_uint8(graph, values, users):
    """Per-tensor int8 activation Q/DQ pairs with zero point 0 -> uint8 with zero point 128 (same values)."""
    from onnx import numpy_helper
    zero_point = "ort_uint8_zero_point_128"
    graph.initializer.append(numpy_helper.from_array(np.array(128, dtype=np.uint8), zero_point))
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in values or len(node.input) < 3:
            continue
        zp, scale = values.get(node.input[2]), values.get(node.input[1])
        if zp is None or scale is None or zp.dtype != np.int8 or zp.size != 1 or scale.size != 1 or zp.any():
            continue
        if not all(u.op_type == "DequantizeLinear" for u in users[node.output[0]]):
            continue
        node.input[2] = zero_point
        for dq in users[node.output[0]]:
            dq.input[2] = zero_point


def _relu_after_quantize(graph, users):
    """``Relu -> Q`` (every reader of the ReLU a Q) -> ``Q -> Clip(min = zero point)``."""
    from onnx import helper
    outputs = {o.name for o in graph.output}
    relus = [n for n in graph.node if n.op_type == "Relu" and n.output[0] not in outputs and users[n.output[0]]
             and all(u.op_type == "QuantizeLinear" and len(u.input) == 3 for u in users[n.output[0]])]
    rewired = set()  # output names (unique in a graph) of the Q nodes that now read the ReLU's input
    for relu in relus:
        for q in users[relu.output[0]]:
            q.input[0] = relu.input[0]
            rewired.add(q.output[0])
    dropped = {r.output[0] for r in relus}
    nodes = []
    for node in graph.node:
        if node.op_type == "Relu" and node.output[0] in dropped:
            continue
        nodes.append(node)
        if node.op_type == "QuantizeLinear" and node.output[0] in rewired:
            quantized = node.output[0]
            node.output[0] = quantized + "_before_relu"
            nodes.append(helper.make_node("Clip", [node.output[0], node.input[2]], [quantized],
                                          name=node.name + "_relu"))
    del graph.node[:]
    graph.node.extend(nodes)


def lower_for_onnxruntime(onnx_bytes):
    """The graph rewritten so that onnxruntime's CPU provider fuses its quantized layers into INT8 kernels
    (see the module docstring); returns serialized bytes."""
    import onnx
    proto = onnx.load_from_string(onnx_bytes)
    graph = proto.graph
    _activations_to_uint8(graph, _constants(graph), _consumers(graph))
    _relu_after_quantize(graph, _consumers(graph))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _session_options(threads, optimized_path=None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the optimized-model dump warns that it is hardware specific; it is only read
    if optimized_path is not None:
        options.optimized_model_filepath = optimized_path
    return options


def kernel_counts(onnx_bytes, threads=1):
    """``Counter`` of the operator types in the graph onnxruntime's CPU provider runs for ``onnx_bytes``."""
    import onnx
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(onnx_bytes, _session_options(threads, path), providers=["CPUExecutionProvider"])
        return collections.Counter(node.op_type for node in onnx.load(path).graph.node)


def describe_kernels(counts):
    """One line: which compute kernels ran in INT8 and which in float."""
    int8 = ", ".join(f"{counts[k]} {k}" for k in INT8_KERNELS if counts[k]) or "none"
    flt = ", ".join(f"{counts[k]} {k}" for k in _FLOAT_KERNELS if counts[k]) or "none"
    return f"INT8 kernels: {int8}; float kernels: {flt}"


class OrtGraph:
    """A ``Graph`` in an onnxruntime CPU session, called with torch tensors (positional, in the graph's input
    order) and returning torch tensors on the first input's device."""

    def __init__(self, graph, threads, lower=True):
        import onnxruntime as ort
        self.graph = graph
        self.onnx = lower_for_onnxruntime(graph.onnx) if lower else graph.onnx
        self.session = ort.InferenceSession(self.onnx, _session_options(threads), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *tensors):
        device = tensors[0].device
        feed = {name: t.detach().cpu().numpy() for name, t in zip(self.inputs, tensors)}
        return [torch.from_numpy(out).to(device) for out in self.session.run(None, feed)]


def median_ms(functions, repeats=7):
    """``{name: median milliseconds}`` of each zero-argument function, the calls interleaved (one warm-up each)
    so that a busy machine slows every candidate alike."""
    times = {name: [] for name in functions}
    for fn in functions.values():
        fn()
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(1000.0 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def _value_info(value):
    from onnx import helper
    tensor = value.type.tensor_type
    shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
    return {"name": value.name, "dtype": helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": shape}


def write_graphs(directory, graphs, extra=None):
    """Write each graph as ``<directory>/<name>.onnx`` (checked with ``onnx.checker`` after writing) and
    ``<directory>/io.json`` (per graph: inputs and outputs with dtype and shape; symbolic sizes by name; plus
    ``extra``). Returns the JSON document."""
    import onnx
    os.makedirs(directory, exist_ok=True)
    doc = dict(extra or {}, graphs={})
    for graph in graphs:
        path = os.path.join(directory, f"{graph.name}.onnx")
        atomic_write(path, lambda f, data=graph.onnx: f.write(data))
        onnx.checker.check_model(path, full_check=True)
        proto = onnx.load(path)
        doc["graphs"][graph.name] = {"file": os.path.basename(path), "opset": proto.opset_import[0].version,
                                     "inputs": [_value_info(v) for v in proto.graph.input],
                                     "outputs": [_value_info(v) for v in proto.graph.output]}
    atomic_write_text(os.path.join(directory, "io.json"), json.dumps(doc, indent=2) + "\n")
    return doc
