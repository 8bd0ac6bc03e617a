"""OpenPCDet's Waymo evaluation without TensorFlow 2.13 in the driver's environment.

``pcdet.datasets.waymo.waymo_eval`` imports TensorFlow and the metrics op at import time; the op links against
TensorFlow 2.13 exactly, and its pickles cannot cross from numpy 2 to numpy 1. ``install()`` puts this module in
its place (``sys.modules``), so ``WaymoDataset.evaluation``'s ``from .waymo_eval import
OpenPCDetWaymoDetectionMetricsEstimator`` gets ``OpenPCDetWaymoDetectionMetricsEstimator`` below: the same
conversion of OpenPCDet's info dicts to boxes (ground truth of the evaluated classes with LiDAR points, unknown
difficulty from the point count, boxes of old "fake LiDAR" infos turned into LiDAR boxes, headings wrapped to
[-pi, pi), logits squashed when scores exceed 1, both sides cut at ``distance_thresh``), then arrays (never
pickles) to ``integration.data.waymo.metric.evaluate`` in the metrics environment. Returns OpenPCDet's keys,
``OBJECT_TYPE_TYPE_<TYPE>_LEVEL_<k>/AP`` and ``/APH``, each a one-element list as its caller expects.
"""
import sys

import numpy as np

from integration.data.waymo.metric import TYPES, evaluate

__all__ = ["OpenPCDetWaymoDetectionMetricsEstimator", "install", "MODULE"]

MODULE = "pcdet.datasets.waymo.waymo_eval"
WAYMO_CLASSES = ("unknown", "Vehicle", "Pedestrian", "Sign", "Cyclist")


def _wrap_heading(heading):
    return heading - np.floor(heading / (2 * np.pi) + 0.5) * 2 * np.pi


def _fake_lidar_to_lidar(boxes):
    """[x, y, z_bottom, w, l, h, r] of old infos -> [x, y, z_centre, l, w, h, -(r + pi / 2)]."""
    boxes = np.array(boxes, dtype=np.float64)
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] + boxes[:, 5] / 2, boxes[:, 4], boxes[:, 3],
                     boxes[:, 5], -(boxes[:, 6] + np.pi / 2)], axis=1)


def infos_to_arrays(infos, class_names, is_gt, fake_gt_infos=True, distance_thresh=1000):
    """OpenPCDet's annos (ground truth) or detections as the arrays ``metric.evaluate`` takes."""
    boxes, types, frames, extra = [], [], [], []
    for frame, info in enumerate(infos):
        if is_gt:
            if "num_points_in_gt" not in info:
                raise ValueError("Waymo ground truth infos lack num_points_in_gt; recreate them with "
                                 "create_waymo_infos (python integration/prepare_data.py waymo --framework openpcdet)")
            keep = np.array([n in class_names for n in info["name"]], dtype=bool)
            frame_boxes = np.asarray(info["gt_boxes_lidar"])
            if fake_gt_infos:
                frame_boxes = _fake_lidar_to_lidar(frame_boxes)
            extra.append((np.asarray(info["difficulty"])[keep], np.asarray(info["num_points_in_gt"])[keep]))
        else:
            keep = np.ones(len(info["name"]), dtype=bool)
            frame_boxes = np.asarray(info["boxes_lidar"])
            extra.append(np.asarray(info["score"], dtype=np.float64))
        boxes.append(np.asarray(frame_boxes, dtype=np.float64).reshape(-1, frame_boxes.shape[-1] or 7)[keep, :7])
        types += [WAYMO_CLASSES.index(n) for n in np.asarray(info["name"])[keep]]
        frames.append(np.full(int(keep.sum()), frame, dtype=np.int64))
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 7))
    boxes[:, 6] = _wrap_heading(boxes[:, 6])
    arrays = {"boxes": boxes, "types": np.array(types, dtype=np.uint8),
              "frame_ids": np.concatenate(frames) if frames else np.zeros(0, dtype=np.int64)}
    if is_gt:
        arrays["difficulty"] = np.concatenate([d for d, _ in extra]).astype(np.uint8)
        arrays["num_points"] = np.concatenate([p for _, p in extra]).astype(np.int64)
    else:
        scores = np.concatenate(extra) if extra else np.zeros(0)
        arrays["scores"] = 1 / (1 + np.exp(-scores)) if scores.size and scores.max() > 1 else scores
    near = np.linalg.norm(boxes[:, :2], axis=1) < distance_thresh + 0.5
    return {key: value[near] for key, value in arrays.items()}


class OpenPCDetWaymoDetectionMetricsEstimator:
    """The one method ``WaymoDataset.evaluation`` calls, over the official op in the metrics environment."""

    def waymo_evaluation(self, prediction_infos, gt_infos, class_name, distance_thresh=100, fake_gt_infos=True):
        if len(prediction_infos) != len(gt_infos):
            raise ValueError(f"{len(prediction_infos)} prediction frames for {len(gt_infos)} ground-truth frames")
        pred = infos_to_arrays(prediction_infos, class_name, False, distance_thresh=distance_thresh)
        gt = infos_to_arrays(gt_infos, class_name, True, fake_gt_infos, distance_thresh)
        breakdowns = evaluate(gt, pred)["breakdowns"]
        result = {}
        for _, type_name in TYPES:
            for level in (1, 2):
                values = breakdowns[f"OBJECT_TYPE_{type_name}_LEVEL_{level}"]
                result[f"OBJECT_TYPE_{type_name}_LEVEL_{level}/AP"] = [values["mAP"]]
                result[f"OBJECT_TYPE_{type_name}_LEVEL_{level}/APH"] = [values["mAPH"]]
        return result


def install():
    """Make ``pcdet.datasets.waymo.waymo_eval`` this module (idempotent)."""
    sys.modules[MODULE] = sys.modules[__name__]
