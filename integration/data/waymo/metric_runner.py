"""Waymo detection metrics through the official op; runs INSIDE the metrics environment.

    python metric_runner.py GT PRED OUT_JSON

GT and PRED are both ``metrics_pb2.Objects`` files (``.bin``; frames are matched on context name,
camera name and timestamp, and a prediction's ``overlap_with_nlz`` is honoured) or both ``.npz`` files with arrays ``boxes`` [N, 7] (center x, y, z, length, width,
height, heading), ``types`` [N], ``frame_ids`` [N], plus ``scores`` [N] for predictions and
``difficulty`` [N] (and optionally ``num_points`` [N]) for the ground truth; predictions may carry
``overlap_nlz`` [N] (bool: overlaps a no-label zone, so never a false positive).

Settings are the Waymo package's default detection configuration: breakdowns OBJECT_TYPE and RANGE
([0, 30), [30, 50), [50, inf) m), difficulties LEVEL_1 and LEVEL_2, Hungarian matching, 3D IoU
thresholds 0.7 vehicle / 0.5 pedestrian, sign, cyclist, score cutoffs 0.00, 0.01, ..., 0.99, 1.0.
Ground truth as the official evaluation treats it: boxes without LiDAR points are dropped, and an
unknown difficulty becomes LEVEL_2 with at most 5 points and LEVEL_1 otherwise.

This file imports nothing from the project: the metrics environment has TensorFlow 2.13, numpy 1.x
and ``waymo-open-dataset-tf-2-12-0`` but not the project's packages.
"""
import json
import os
import sys

import numpy as np
import tensorflow as tf
from waymo_open_dataset import label_pb2
from waymo_open_dataset.metrics.ops import py_metrics_ops
from waymo_open_dataset.metrics.python import config_util_py
from waymo_open_dataset.protos import breakdown_pb2, metrics_pb2

IOU_THRESHOLDS = (0.0, 0.7, 0.5, 0.5, 0.5)  # indexed by label type: unknown, vehicle, pedestrian, sign, cyclist
LEVEL_2_MAX_POINTS = 5


def detection_config():
    config = metrics_pb2.Config()
    for breakdown in (breakdown_pb2.Breakdown.OBJECT_TYPE, breakdown_pb2.Breakdown.RANGE):
        config.breakdown_generator_ids.append(breakdown)
        config.difficulties.add().levels.extend([label_pb2.Label.LEVEL_1, label_pb2.Label.LEVEL_2])
    config.matcher_type = metrics_pb2.MatcherProto.TYPE_HUNGARIAN
    config.iou_thresholds.extend(IOU_THRESHOLDS)
    config.box_type = label_pb2.Label.Box.TYPE_3D
    config.score_cutoffs.extend([i * 0.01 for i in range(100)] + [1.0])
    return config


def _objects_arrays(objects, frame_index, with_scores):
    rows = []
    for o in objects.objects:
        key = (o.context_name, o.camera_name, o.frame_timestamp_micros)
        frame_id = frame_index.setdefault(key, len(frame_index))
        b = o.object.box
        rows.append(([b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading],
                     o.object.type, frame_id, o.score, o.object.detection_difficulty_level,
                     o.object.num_lidar_points_in_box, o.overlap_with_nlz))
    boxes, types, frame_ids, scores, difficulty, points, nlz = (list(c) for c in zip(*rows)) if rows else ([],) * 7
    arrays = {'boxes': np.array(boxes, dtype=np.float32).reshape(-1, 7), 'types': np.array(types, dtype=np.uint8),
              'frame_ids': np.array(frame_ids, dtype=np.int64)}
    if with_scores:
        arrays['scores'] = np.array(scores, dtype=np.float32)
        arrays['overlap_nlz'] = np.array(nlz, dtype=bool)
    else:
        arrays['difficulty'] = np.array(difficulty, dtype=np.uint8)
        arrays['num_points'] = np.array(points, dtype=np.int64)
    return arrays


def load_inputs(gt_path, pred_path):
    kinds = {os.path.splitext(p)[1] for p in (gt_path, pred_path)}
    if kinds == {'.bin'}:
        frame_index = {}
        loaded = []
        for path, with_scores in ((gt_path, False), (pred_path, True)):
            objects = metrics_pb2.Objects()
            with open(path, 'rb') as f:
                objects.ParseFromString(f.read())
            loaded.append(_objects_arrays(objects, frame_index, with_scores))
        return loaded
    if kinds == {'.npz'}:
        return [dict(np.load(p)) for p in (gt_path, pred_path)]
    raise ValueError(f'GT and PRED must both be .bin (metrics_pb2.Objects) or both .npz; got {gt_path}, {pred_path}')


def official_ground_truth(gt):
    """Drop boxes without points; give unknown difficulties the level their point count implies."""
    difficulty = gt['difficulty'].astype(np.uint8).copy()
    if 'num_points' in gt:
        points = gt['num_points']
        unknown = difficulty == label_pb2.Label.UNKNOWN
        difficulty[unknown & (points > LEVEL_2_MAX_POINTS)] = label_pb2.Label.LEVEL_1
        difficulty[unknown & (points <= LEVEL_2_MAX_POINTS)] = label_pb2.Label.LEVEL_2
        keep = points > 0
    else:
        difficulty[difficulty == label_pb2.Label.UNKNOWN] = label_pb2.Label.LEVEL_1
        keep = np.ones(len(difficulty), dtype=bool)
    return {'boxes': gt['boxes'][keep], 'types': gt['types'][keep], 'frame_ids': gt['frame_ids'][keep],
            'difficulty': difficulty[keep]}


def evaluate(gt, pred):
    config = detection_config()
    gt = official_ground_truth(gt)
    outputs = py_metrics_ops.detection_metrics(
        prediction_bbox=tf.constant(pred['boxes'], dtype=tf.float32),
        prediction_type=tf.constant(pred['types'], dtype=tf.uint8),
        prediction_score=tf.constant(pred['scores'], dtype=tf.float32),
        prediction_frame_id=tf.constant(pred['frame_ids'], dtype=tf.int64),
        prediction_overlap_nlz=tf.constant(pred.get('overlap_nlz', np.zeros(len(pred['scores']), dtype=bool)),
                                           dtype=tf.bool),
        ground_truth_bbox=tf.constant(gt['boxes'], dtype=tf.float32),
        ground_truth_type=tf.constant(gt['types'], dtype=tf.uint8),
        ground_truth_frame_id=tf.constant(gt['frame_ids'], dtype=tf.int64),
        ground_truth_difficulty=tf.constant(gt['difficulty'], dtype=tf.uint8),
        config=config.SerializeToString())
    ap, aph = outputs[0].numpy(), outputs[1].numpy()
    names = config_util_py.get_breakdown_names_from_config(config)
    return {name: {'mAP': float(a), 'mAPH': float(h)} for name, a, h in zip(names, ap, aph)}


def main(argv):
    if len(argv) != 3:
        print('usage: metric_runner.py GT PRED OUT_JSON', file=sys.stderr)
        return 2
    gt, pred = load_inputs(argv[0], argv[1])
    result = evaluate(gt, pred)
    tmp = argv[2] + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, argv[2])
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
