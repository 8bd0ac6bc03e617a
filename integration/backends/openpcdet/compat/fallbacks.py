"""Install the CPU fallbacks into an imported OpenPCDet (``install_cpu_fallbacks``, idempotent).

* ``pcdet.ops.iou3d_nms.iou3d_nms_utils.nms_gpu`` / ``nms_normal_gpu`` / ``boxes_iou3d_gpu`` become
  dispatchers: CUDA tensors go to the original compiled op, CPU tensors to ``bev_nms`` (the compiled NMS
  ends the process on CPU tensors). Callers look these functions up on the module at call time
  (``model_nms_utils``, the detectors' recall statistics), so they pick the dispatchers up.
* ``roiaware_pool3d_utils.points_in_boxes_gpu`` likewise (CPU tensors -> ``points_in_boxes``), and
  ``points_in_boxes_cpu`` is replaced when its compiled extension is a placeholder (info generation's
  ground-truth database uses them).
* ``numpy.int`` / ``numpy.float`` (removed in NumPy 1.24) are set back to ``int`` / ``float`` when absent:
  OpenPCDet still uses them, e.g. ``BaseBEVBackbone`` with a fractional upsample stride (the
  ``cbgs_dyn_pp_centerpoint`` neck). This is process-wide; nothing else changes in numpy.
* The dynamic VFE modules get ``torch_scatter`` = ``integration.backends.openpcdet.compat.scatter`` when the real
  package did not import there (they swallow that ImportError and would fail later with a NameError).
"""
import functools
import importlib

import numpy as np

from integration.backends.openpcdet.compat import bev_nms, placeholders, points_in_boxes, scatter

__all__ = ["install_cpu_fallbacks", "DYNAMIC_VFE_MODULES"]

DYNAMIC_VFE_MODULES = (
    "pcdet.models.backbones_3d.vfe.dynamic_pillar_vfe",
    "pcdet.models.backbones_3d.vfe.dynamic_mean_vfe",
    "pcdet.models.backbones_3d.vfe.dynamic_voxel_vfe",
)
_NUMPY_ALIASES = {"int": int, "float": float}
_IOU3D_NMS = {"nms_gpu": bev_nms.nms_rotated_cpu, "nms_normal_gpu": bev_nms.nms_aligned_cpu,
              "boxes_iou3d_gpu": bev_nms.boxes_iou3d_cpu}


def _dispatch(original, cpu_version):
    """``original`` for CUDA tensors (the first argument decides), ``cpu_version`` otherwise."""
    @functools.wraps(original)
    def op(first, *args, **kwargs):
        if first.is_cuda:
            return original(first, *args, **kwargs)
        return cpu_version(first, *args, **kwargs)

    op.cpu_fallback = True
    return op


def _patch(module, name, replacement):
    if not getattr(getattr(module, name), "cpu_fallback", False):
        setattr(module, name, replacement)


def install_cpu_fallbacks():
    """Patch the imported pcdet modules (see the module docstring); returns what was installed, as text."""
    done = []
    utils = importlib.import_module("pcdet.ops.iou3d_nms.iou3d_nms_utils")
    for name, cpu_version in _IOU3D_NMS.items():
        _patch(utils, name, _dispatch(getattr(utils, name), cpu_version))
        done.append(f"iou3d_nms_utils.{name} (CPU tensors)")
    roiaware = importlib.import_module("pcdet.ops.roiaware_pool3d.roiaware_pool3d_utils")
    _patch(roiaware, "points_in_boxes_gpu",
           _dispatch(roiaware.points_in_boxes_gpu, points_in_boxes.points_in_boxes_batched))
    done.append("roiaware_pool3d_utils.points_in_boxes_gpu (CPU tensors)")
    if placeholders.is_placeholder(roiaware.roiaware_pool3d_cuda):
        replacement = points_in_boxes.points_in_boxes_mask
        replacement.cpu_fallback = True
        _patch(roiaware, "points_in_boxes_cpu", replacement)
        done.append("roiaware_pool3d_utils.points_in_boxes_cpu")
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)
        if np.__dict__[name] is value:
            done.append(f"numpy.{name}")
    for module_name in DYNAMIC_VFE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if getattr(module, "torch_scatter", scatter) is scatter:
            module.torch_scatter = scatter
            done.append(f"{module_name.rsplit('.', 1)[1]}.torch_scatter")
    return done
