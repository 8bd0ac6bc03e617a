"""nuScenes detection mAP and NDS on any list of validation frames, fast (numpy), for the paired bootstrap.

The devkit's ``DetectionEval`` matches predictions to ground truth over the whole split and is keyed by sample
token, so it cannot evaluate a resample in which a frame appears twice, and re-running it 1000 times is slow.
Matching, however, never crosses frames: a prediction is matched greedily, in descending score order, to the
closest untaken ground-truth box of its class IN ITS OWN FRAME. So each frame's outcome (which of its predictions
are true positives at each distance threshold, and the errors of the true positives at the TP threshold) is fixed
once (``integration.data.nuscenes_records``), and a metric over any multiset of frames only pools those
outcomes: sort the pooled predictions by score, accumulate precision and recall (recall over the pooled
ground-truth count, a frame drawn twice counts twice), interpolate on 101 recall points, and average the
precision above ``min_recall`` less ``min_precision`` (AP), and the TP errors' running means between
``min_recall`` and the highest recall reached (TP metrics), exactly as the devkit defines them. On the full set
of frames this equals the devkit's mAP / NDS (tests/integration/test_nuscenes_ap.py).

``FrameRecords``: per class, the predictions of every frame concatenated (scores, true-positive flags per
distance threshold, TP errors) with each frame's slice, plus the ground-truth count per frame.
``metrics(records, frames)`` -> ``{"mAP", "NDS", "class_AP", "tp_errors"}`` for a list of frame indices
(repeats allowed).
"""
import dataclasses
from typing import Dict, List, Sequence

import numpy as np

__all__ = ["ClassRecords", "FrameRecords", "metrics", "TP_METRICS", "UNDEFINED_TP"]

#: the devkit's true-positive error metrics, in its order
TP_METRICS = ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")
#: TP metrics the devkit leaves undefined (NaN) for a class
UNDEFINED_TP = {"traffic_cone": ("attr_err", "vel_err", "orient_err"), "barrier": ("attr_err", "vel_err")}
_RECALL_POINTS = 101


@dataclasses.dataclass
class ClassRecords:
    """One class over all frames: predictions concatenated frame after frame (each frame's devkit order).

    ``scores`` [P]; ``tp`` [thresholds, P] bool; ``errors`` [5, P] TP errors at the TP threshold (NaN where the
    prediction is no true positive there); ``starts`` / ``counts`` [frames]: each frame's slice of the P
    predictions; ``gt`` [frames]: ground-truth boxes of the class per frame.
    """

    scores: np.ndarray
    tp: np.ndarray
    errors: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    gt: np.ndarray


@dataclasses.dataclass
class FrameRecords:
    """Per-frame detection outcomes of one evaluation: ``tokens`` (frame order), ``classes``
    (``{class: ClassRecords}``) and the devkit settings they were made with."""

    tokens: List[str]
    classes: Dict[str, ClassRecords]
    dist_ths: List[float]
    dist_th_tp: float
    min_recall: float
    min_precision: float
    mean_ap_weight: float

    def __len__(self):
        return len(self.tokens)

    def reordered(self, tokens):
        """These records with frames in the order of ``tokens`` (the same set of frames)."""
        if sorted(tokens) != sorted(self.tokens):
            raise ValueError("the two evaluations did not cover the same validation frames; they cannot be paired")
        where = {t: i for i, t in enumerate(self.tokens)}
        order = np.array([where[t] for t in tokens], dtype=np.int64)
        classes = {}
        for name, rec in self.classes.items():
            idx = _gather(rec.starts, rec.counts, order)
            counts = rec.counts[order]
            classes[name] = ClassRecords(rec.scores[idx], rec.tp[:, idx], rec.errors[:, idx],
                                         np.cumsum(counts) - counts, counts, rec.gt[order])
        return dataclasses.replace(self, tokens=list(tokens), classes=classes)


def _gather(starts, counts, frames):
    """Indices of the predictions of ``frames`` (in that order, repeats repeated)."""
    counts = counts[frames]
    total = int(counts.sum())
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts[frames] - offsets, counts) + np.arange(total)


def _pr_curve(scores, tp, npos):
    """Precision and confidence on the 101 recall points (the devkit's interpolation), and the sort order."""
    order = np.lexsort((-np.arange(scores.size), -scores))  # score descending, later position first on ties
    hits = tp[order]
    ctp = np.cumsum(hits, dtype=np.float64)
    cfp = np.cumsum(~hits, dtype=np.float64)
    recall = ctp / float(npos)
    points = np.linspace(0.0, 1.0, _RECALL_POINTS)
    precision = np.interp(points, recall, ctp / (ctp + cfp), right=0)
    confidence = np.interp(points, recall, scores[order], right=0)
    return precision, confidence, order, hits


def _ap(precision, min_recall, min_precision):
    kept = precision[round(100 * min_recall) + 1:] - min_precision
    return float(np.mean(np.clip(kept, 0.0, None))) / (1.0 - min_precision)


def _running_mean(values):
    """Cumulative mean ignoring NaN (0 before the first number; all NaN -> ones, as the devkit)."""
    valid = ~np.isnan(values)
    if not valid.any():
        return np.ones(values.size)
    sums = np.cumsum(np.where(valid, values, 0.0))
    counts = np.cumsum(valid)
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts != 0)


def _tp_errors(errors, confidence, scores_sorted, hits, min_recall):
    """The five TP errors of one class (1.0 each when too little recall is reached)."""
    first = round(100 * min_recall) + 1
    reached = np.flatnonzero(confidence)
    last = int(reached[-1]) if reached.size else 0
    if last < first:
        return np.ones(len(TP_METRICS))
    match_conf = scores_sorted[hits][::-1]
    out = []
    for row in errors:
        curve = np.interp(confidence[::-1], match_conf, _running_mean(row)[::-1])[::-1]
        out.append(float(np.mean(curve[first:last + 1])))
    return np.array(out)


def _class_metrics(rec, frames, records):
    """(mean AP over the distance thresholds, TP errors) of one class on ``frames``."""
    npos = int(rec.gt[frames].sum())
    idx = _gather(rec.starts, rec.counts, frames)
    scores, tp = rec.scores[idx], rec.tp[:, idx]
    if npos == 0 or scores.size == 0:
        return 0.0, np.ones(len(TP_METRICS))
    aps, tp_err = [], np.ones(len(TP_METRICS))
    for k, dist_th in enumerate(records.dist_ths):
        if not tp[k].any():  # no match at all: the devkit's "no predictions" curve
            aps.append(0.0)
            continue
        precision, confidence, order, hits = _pr_curve(scores, tp[k], npos)
        aps.append(_ap(precision, records.min_recall, records.min_precision))
        if dist_th == records.dist_th_tp:
            errors = rec.errors[:, idx][:, order][:, hits]
            tp_err = _tp_errors(errors, confidence, scores[order], hits, records.min_recall)
    if records.dist_th_tp not in records.dist_ths:
        raise ValueError(f"dist_th_tp {records.dist_th_tp} is not one of the distance thresholds {records.dist_ths}")
    return float(np.mean(aps)), tp_err


def metrics(records: FrameRecords, frames: Sequence[int]) -> dict:
    """``{"mAP", "NDS", "class_AP", "tp_errors"}`` of the frames ``frames`` (indices; repeats count again)."""
    frames = np.asarray(frames, dtype=np.int64)
    class_ap, per_class_tp = {}, {}
    for name, rec in records.classes.items():
        class_ap[name], errs = _class_metrics(rec, frames, records)
        undefined = UNDEFINED_TP.get(name, ())
        per_class_tp[name] = [np.nan if m in undefined else e for m, e in zip(TP_METRICS, errs)]
    mean_ap = float(np.mean(list(class_ap.values())))
    table = np.array(list(per_class_tp.values()), dtype=np.float64)
    tp_errors = {m: float(np.nanmean(table[:, j])) for j, m in enumerate(TP_METRICS)}
    scores = [max(0.0, 1.0 - e) for e in tp_errors.values()]
    nds = (records.mean_ap_weight * mean_ap + sum(scores)) / (records.mean_ap_weight + len(scores))
    return {"mAP": mean_ap, "NDS": float(nds), "class_AP": class_ap, "tp_errors": tp_errors}
