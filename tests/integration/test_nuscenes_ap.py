"""The fast per-frame nuScenes mAP / NDS (integration/data/nuscenes_ap.py) against the devkit's own evaluation.

Random ground truth and predictions (near misses at every distance, false positives, ties in distance, classes
without ground truth or without predictions) are evaluated by the devkit's ``DetectionEval.evaluate`` and by the
records + numpy metric; on the full set of frames both must agree to 1e-9. Resamples with repeated frames are
checked against the devkit run on a copy of the data in which each repeated frame is a new sample token.
"""
import types

import numpy as np
import pytest

from conftest import has_module

pytestmark = pytest.mark.skipif(not has_module("nuscenes"),
                                reason="needs nuscenes-devkit (bash scripts/setup_mmdet3d.sh)")


def _yaw_quat(yaw):
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _random_boxes(seed, frames=12):
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.constants import DETECTION_NAMES
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.eval.detection.utils import detection_name_to_rel_attributes
    rng = np.random.default_rng(seed)
    names = [n for n in DETECTION_NAMES if n != "bicycle"]  # bicycle: no ground truth, some predictions
    gt, pred = EvalBoxes(), EvalBoxes()
    for f in range(frames):
        token = f"frame{f:03d}"
        gts, preds = [], []
        for _ in range(rng.integers(0, 15)):
            name = str(rng.choice(names[:-1]))  # the last kept class gets predictions only
            attrs = detection_name_to_rel_attributes(name)
            box = DetectionBox(sample_token=token, translation=tuple(rng.uniform(-40, 40, 3)),
                               size=tuple(rng.uniform(0.5, 5, 3)), rotation=_yaw_quat(rng.uniform(-3, 3)),
                               velocity=tuple(rng.normal(0, 3, 2)), detection_name=name, num_pts=10,
                               attribute_name=str(rng.choice(attrs)) if attrs else "")
            gts.append(box)
            for _ in range(rng.integers(0, 3)):  # 0..2 detections near each ground-truth box
                offset = rng.choice([0.2, 0.7, 1.5, 3.0, 5.0]) * rng.normal(0, 1, 3)
                preds.append(DetectionBox(
                    sample_token=token, translation=tuple(np.array(box.translation) + offset),
                    size=tuple(np.array(box.size) * rng.uniform(0.7, 1.3, 3)),
                    rotation=_yaw_quat(rng.uniform(-3, 3)), velocity=tuple(rng.normal(0, 3, 2)),
                    detection_name=name, detection_score=float(rng.choice([rng.uniform(), 0.5])),
                    attribute_name=str(rng.choice(attrs)) if attrs else ""))
        for _ in range(rng.integers(0, 6)):  # false positives, some of classes without ground truth
            name = str(rng.choice(names + ["bicycle"]))
            attrs = detection_name_to_rel_attributes(name)
            preds.append(DetectionBox(sample_token=token, translation=tuple(rng.uniform(-40, 40, 3)),
                                      size=(1.0, 1.0, 1.0), rotation=_yaw_quat(0.3), velocity=(0.0, 0.0),
                                      detection_name=name, detection_score=float(rng.uniform()),
                                      attribute_name=str(rng.choice(attrs)) if attrs else ""))
        gt.add_boxes(token, gts)
        pred.add_boxes(token, preds)
    return gt, pred


def _devkit(gt, pred):
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    fake = types.SimpleNamespace(cfg=config_factory("detection_cvpr_2019"), gt_boxes=gt, pred_boxes=pred,
                                 verbose=False)
    result, _ = DetectionEval.evaluate(fake)
    return fake, result


def _relabelled(boxes, frames):
    """A copy of ``boxes`` holding ``frames`` (tokens, repeats allowed) each under a new sample token."""
    import copy
    from nuscenes.eval.common.data_classes import EvalBoxes
    out = EvalBoxes()
    for k, token in enumerate(frames):
        copies = [copy.copy(b) for b in boxes[token]]
        for b in copies:
            b.sample_token = f"draw{k:03d}"
        out.add_boxes(f"draw{k:03d}", copies)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_set_equals_devkit(seed):
    from integration.data.nuscenes_ap import metrics
    from integration.data.nuscenes_records import frame_records
    gt, pred = _random_boxes(seed)
    fake, reference = _devkit(gt, pred)
    records = frame_records(fake)
    ours = metrics(records, range(len(records)))
    assert ours["mAP"] == pytest.approx(reference.mean_ap, abs=1e-9)
    assert ours["NDS"] == pytest.approx(reference.nd_score, abs=1e-9)
    for name, ap in ours["class_AP"].items():
        assert ap == pytest.approx(float(np.mean([reference.get_label_ap(name, d) for d in records.dist_ths])),
                                   abs=1e-9)
    for metric, value in ours["tp_errors"].items():
        assert value == pytest.approx(reference.tp_errors[metric], abs=1e-9, nan_ok=True)
    assert 0.05 < reference.mean_ap < 0.95  # the data exercise real matching, not an all-or-nothing case


def test_resample_with_repeats_equals_devkit_on_relabelled_frames():
    from integration.data.nuscenes_ap import metrics
    from integration.data.nuscenes_records import frame_records
    gt, pred = _random_boxes(5)
    fake, _ = _devkit(gt, pred)
    records = frame_records(fake)
    draw = np.random.default_rng(7).integers(0, len(records), len(records))
    tokens = [records.tokens[i] for i in draw]
    _, reference = _devkit(_relabelled(gt, tokens), _relabelled(pred, tokens))
    ours = metrics(records, draw)
    assert ours["mAP"] == pytest.approx(reference.mean_ap, abs=1e-9)
    assert ours["NDS"] == pytest.approx(reference.nd_score, abs=1e-9)


def test_reordered_records_keep_each_frame():
    from integration.data.nuscenes_ap import metrics
    from integration.data.nuscenes_records import frame_records
    gt, pred = _random_boxes(3)
    records = frame_records(_devkit(gt, pred)[0])
    tokens = records.tokens[::-1]
    flipped = records.reordered(tokens)
    assert flipped.tokens == tokens
    some = [0, 0, 3, 5]
    assert metrics(flipped, some) == metrics(records, [len(tokens) - 1 - i for i in some])
    with pytest.raises(ValueError, match="same validation frames"):
        records.reordered(tokens[1:])


def test_capture_sees_evaluations_through_the_devkits_nuscenes_eval_and_restores_it():
    """Both backends' metrics evaluate through ``NuScenesEval`` (a ``DetectionEval`` subclass)."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval, NuScenesEval
    from integration.data.nuscenes_records import capture_detection_eval
    original = DetectionEval.evaluate
    gt, pred = _random_boxes(4, frames=3)
    fake = types.SimpleNamespace(cfg=config_factory("detection_cvpr_2019"), gt_boxes=gt, pred_boxes=pred,
                                 verbose=False)
    with capture_detection_eval() as captured:
        NuScenesEval.evaluate(fake)
    assert captured == [fake]
    assert DetectionEval.evaluate is original
