"""Per-frame detection records from the nuscenes-devkit's own evaluation (both backends on nuScenes).

``capture_detection_eval()`` is a context manager: every ``DetectionEval`` (MMDetection3D's ``NuScenesMetric``
and OpenPCDet's nuScenes ``evaluation`` both run one) that evaluates inside it is appended to the yielded list
after its ``__init__`` has loaded and filtered the boxes (class ranges, bike racks, empty ground truth, at most
``max_boxes_per_sample``). ``frame_records(detection_eval)`` then matches each frame once, as the devkit's
``accumulate`` does (descending score, closest untaken ground truth of the class by the config's distance
function, strictly below the threshold), and returns the ``nuscenes_ap.FrameRecords`` the fast metric resamples.
"""
import contextlib

import numpy as np

from integration.data.nuscenes_ap import TP_METRICS, ClassRecords, FrameRecords

__all__ = ["capture_detection_eval", "frame_records"]


@contextlib.contextmanager
def capture_detection_eval():
    """Yield a list that receives every nuscenes-devkit ``DetectionEval`` evaluated inside the block."""
    from nuscenes.eval.detection.evaluate import DetectionEval
    captured = []
    original = DetectionEval.evaluate

    def evaluate(self, *args, **kwargs):
        captured.append(self)
        return original(self, *args, **kwargs)

    DetectionEval.evaluate = evaluate
    try:
        yield captured
    finally:
        DetectionEval.evaluate = original


def _tp_errors(gt, pred, class_name):
    from nuscenes.eval.common.utils import attr_acc, center_distance, scale_iou, velocity_l2, yaw_diff
    period = np.pi if class_name == "barrier" else 2 * np.pi
    values = {"trans_err": center_distance(gt, pred), "vel_err": velocity_l2(gt, pred),
              "scale_err": 1 - scale_iou(gt, pred), "orient_err": yaw_diff(gt, pred, period=period),
              "attr_err": 1 - attr_acc(gt, pred)}
    return [values[m] for m in TP_METRICS]


def _match_frame(gts, preds, dist_fcn, dist_ths, dist_th_tp, class_name):
    """(tp [thresholds, P] bool, errors [5, P]) of one frame's predictions of one class, in their order."""
    tp = np.zeros((len(dist_ths), len(preds)), dtype=bool)
    errors = np.full((len(TP_METRICS), len(preds)), np.nan)
    if not preds:
        return tp, errors
    distances = np.array([[dist_fcn(g, p) for g in gts] for p in preds]).reshape(len(preds), len(gts))
    order = sorted(range(len(preds)), key=lambda i: (preds[i].detection_score, i), reverse=True)
    for k, dist_th in enumerate(dist_ths):
        taken = np.zeros(len(gts), dtype=bool)
        for i in order:
            free = np.where(taken, np.inf, distances[i])
            if free.size == 0:
                continue
            j = int(np.argmin(free))  # the first of equal distances, as the devkit's strict '<' scan
            if free[j] < dist_th:
                taken[j] = True
                tp[k, i] = True
                if dist_th == dist_th_tp:
                    errors[:, i] = _tp_errors(gts[j], preds[i], class_name)
    return tp, errors


def frame_records(detection_eval) -> FrameRecords:
    """Per-frame records of a captured ``DetectionEval`` (its filtered boxes and its config)."""
    cfg = detection_eval.cfg
    gt_boxes, pred_boxes = detection_eval.gt_boxes, detection_eval.pred_boxes
    tokens = list(gt_boxes.sample_tokens)
    classes = {}
    for name in cfg.class_names:
        scores, tps, errs, counts, gt_counts = [], [], [], [], []
        for token in tokens:
            gts = [b for b in gt_boxes[token] if b.detection_name == name]
            preds = [b for b in pred_boxes[token] if b.detection_name == name]
            tp, errors = _match_frame(gts, preds, cfg.dist_fcn_callable, list(cfg.dist_ths), cfg.dist_th_tp, name)
            scores.append(np.array([b.detection_score for b in preds], dtype=np.float64))
            tps.append(tp)
            errs.append(errors)
            counts.append(len(preds))
            gt_counts.append(len(gts))
        counts = np.array(counts, dtype=np.int64)
        classes[name] = ClassRecords(np.concatenate(scores), np.concatenate(tps, axis=1),
                                     np.concatenate(errs, axis=1), np.cumsum(counts) - counts, counts,
                                     np.array(gt_counts, dtype=np.int64))
    return FrameRecords(tokens, classes, [float(d) for d in cfg.dist_ths], float(cfg.dist_th_tp),
                        float(cfg.min_recall), float(cfg.min_precision), float(cfg.mean_ap_weight))
