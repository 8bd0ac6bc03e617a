"""The dense part of an MMDetection3D CenterPoint as ONNX graphs, and the detector with those graphs in onnxruntime.

Graphs (``integration.driver.onnx_runtime.Graph``), exported by ``onnx_runtime.export_module`` (torch's
TorchScript-based exporter, opset 13, inside ``quant_modules.enable_onnx_export()``):

* ``voxel_encoder`` -- the pillar feature net (``PillarFeatureNet``: point decoration, Linear, BatchNorm1d, ReLU,
  max over the points of a pillar): inputs ``voxels`` (pillars x points x features), ``num_points``, ``coors``
  (the number of pillars is dynamic), output ``pillar_features``. Exported only when the voxel encoder has
  weights (the voxel family's ``HardSimpleVFE`` is a plain mean and its sparse 3D encoder needs a sparse-conv
  engine, so there the dense part starts at the BEV map);
* ``dense`` -- 2D backbone + neck + head: input ``bev`` (the scattered BEV map), one output per task and head
  output, named ``task<t>_<key>`` (``task0_reg``, ``task0_heatmap``, ...).

Voxelisation, scatter, box decoding and NMS stay in the framework. BatchNorm is folded into the layers before the
export, as TensorRT does (``ptq.fold_batchnorm``; a calibrated weight quantizer's per-channel amax is refreshed to
the folded weight, which is the original amax scaled by the BN's per-channel factor, so the quantized function is
unchanged).
"""
import copy

import torch

from integration.driver.onnx_runtime import Graph, export_module

__all__ = ["dense_inputs", "export_graphs", "onnxruntime_detector", "torch_dense_fn"]

class _VoxelEncoderGraph(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, voxels, num_points, coors):
        return self.encoder(voxels, num_points, coors)


class _DenseGraph(torch.nn.Module):
    """backbone -> neck -> head, the head's nested ``([task dict], ...)`` flattened in ``keys`` order."""

    def __init__(self, model):
        super().__init__()
        self.backbone, self.neck, self.head = model.pts_backbone, model.pts_neck, model.pts_bbox_head

    def nested(self, bev):
        feats = self.backbone(bev)
        return self.head(self.neck(feats) if self.neck is not None else feats)

    def forward(self, bev):
        return tuple(value for task in self.nested(bev) for value in task[0].values())


def _head_keys(model, bev):
    """``[[key, ...] per task]`` of the head's output dicts."""
    with torch.no_grad():
        return [list(task[0]) for task in _DenseGraph(model).nested(bev)]


def dense_inputs(model, batch):
    """``(voxel encoder inputs (voxels, num_points, coors), BEV map)`` of one data batch, computed by ``model``."""
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        voxel = data["inputs"]["voxels"]
        args = (voxel["voxels"], voxel["num_points"], voxel["coors"])
        features = model.pts_voxel_encoder(*args)
        bev = model.pts_middle_encoder(features, voxel["coors"], int(voxel["coors"][-1, 0].item()) + 1)
    return args, bev


def _has_voxel_encoder_graph(model):
    return any(True for _ in model.pts_voxel_encoder.parameters())


def export_graphs(model, batch, forward_fn):
    """The ONNX graphs of ``model``'s dense part (see the module docstring); ``model`` is not changed.

    ``batch``: one data batch (traces the BN folding and the export); ``forward_fn(model, batch)``: the
    calibration forward that BN folding traces with.
    """
    from pytorch_quantization import ptq
    deploy = copy.deepcopy(model).eval()
    ptq.fold_batchnorm(deploy, batch, forward_fn=forward_fn)
    voxel_args, bev = dense_inputs(deploy, batch)
    graphs = []
    if _has_voxel_encoder_graph(deploy):
        names = ["voxels", "num_points", "coors"]
        onnx_bytes = export_module(_VoxelEncoderGraph(deploy.pts_voxel_encoder), voxel_args, names,
                                   ["pillar_features"], {n: {0: "pillars"} for n in names + ["pillar_features"]})
        graphs.append(Graph("voxel_encoder", onnx_bytes))
    keys = _head_keys(deploy, bev)
    outputs = [f"task{t}_{key}" for t, task in enumerate(keys) for key in task]
    graphs.append(Graph("dense", export_module(_DenseGraph(deploy), (bev,), ["bev"], outputs)))
    return graphs, keys


class _OrtVoxelEncoder(torch.nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def forward(self, voxels, num_points, coors, *args, **kwargs):  # pylint: disable=unused-argument
        return self.graph(voxels, num_points, coors)[0]


class _AsList(torch.nn.Module):
    """The backbone's place in the onnxruntime detector: the BEV map as a one-level feature list."""

    def forward(self, bev):
        return [bev]


class _OrtHeadForward:
    """``forward`` of a CenterHead whose backbone, neck and head run as one onnxruntime graph."""

    def forward(self, feats):
        values = iter(self.ort_dense(feats[0]))
        return tuple([{key: next(values) for key in task}] for task in self.ort_keys)


def onnxruntime_detector(model, sessions, keys):
    """A copy of ``model`` whose dense part runs in onnxruntime: ``sessions`` maps graph names to ``OrtGraph`` s.
    The ``voxel_encoder`` graph (when exported) replaces ``pts_voxel_encoder``; the head calls the ``dense`` graph
    with the scattered BEV map (backbone and neck become pass-throughs) and keeps its own decoding and NMS."""
    ort_model = copy.deepcopy(model)
    if "voxel_encoder" in sessions:
        ort_model.pts_voxel_encoder = _OrtVoxelEncoder(sessions["voxel_encoder"])
    ort_model.pts_backbone = _AsList()
    ort_model.pts_neck = None
    head = ort_model.pts_bbox_head
    head.__class__ = type(f"Ort{type(head).__name__}", (_OrtHeadForward, type(head)), {})
    head.ort_dense = sessions["dense"]
    head.ort_keys = keys
    return ort_model


def torch_dense_fn(model, voxel_args, bev):
    """A zero-argument function running ``model``'s dense part (voxel encoder when it has weights, backbone,
    neck, head) in torch on the given inputs, as the ``export_graphs`` graphs do."""
    dense = _DenseGraph(model)
    with_encoder = _has_voxel_encoder_graph(model)

    def run():
        with torch.no_grad():
            if with_encoder:
                model.pts_voxel_encoder(*voxel_args)
            dense(bev)
        if bev.is_cuda:
            torch.cuda.synchronize()
    return run
