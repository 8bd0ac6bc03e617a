"""``ZeroVelocity``: Waymo ground truth in the 9-value box layout MMDetection3D's ``CenterHead`` trains on.

MMDetection3D 1.4's ``CenterHead.get_targets_single`` reads a velocity (values 7 and 8) from every
ground-truth box, a nuScenes-only layout; Waymo infos give 7 values. This transform appends a zero
velocity so the head trains unchanged (the Waymo configs give the velocity regression weight 0, so it
learns nothing from these zeros). Registered in ``mmdet3d.registry.TRANSFORMS``; configs load it with
``custom_imports``.
"""
import torch
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS

__all__ = ["ZeroVelocity"]


@TRANSFORMS.register_module()
class ZeroVelocity(BaseTransform):
    """Append (vx, vy) = (0, 0) to ``gt_bboxes_3d`` when it has 7 values per box."""

    def transform(self, results):
        boxes = results.get("gt_bboxes_3d")
        if boxes is None or boxes.tensor.shape[1] != 7:
            return results
        padded = torch.cat([boxes.tensor, boxes.tensor.new_zeros((len(boxes), 2))], dim=1)
        results["gt_bboxes_3d"] = type(boxes)(padded, box_dim=9, with_yaw=boxes.with_yaw)
        return results
