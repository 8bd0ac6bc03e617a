"""OpenPCDet's Waymo evaluation through ``compat.waymo_eval`` (arrays to the official op, no pickles across
numpy versions), on hand-made OpenPCDet info dicts. Skips without the metrics environment
(``bash scripts/setup_waymo.sh``)."""
import numpy as np
import pytest

from integration.backends.openpcdet.compat import waymo_eval
from integration.backends.openpcdet.metrics import summarize_waymo
from integration.data.waymo.metric import metrics_python
from integration.data.waymo.protos import WaymoEnvironmentError

CLASSES = ["Vehicle", "Pedestrian", "Cyclist"]


def _env_missing():
    try:
        metrics_python()
    except WaymoEnvironmentError as exc:
        return str(exc)
    return None


def gt_info(boxes, names, points, difficulty=None):
    return {"name": np.array(names), "gt_boxes_lidar": np.array(boxes, dtype=np.float64),
            "num_points_in_gt": np.array(points), "difficulty": np.array(difficulty or [0] * len(names))}


FRAMES = [gt_info([[10, 2, 1, 4.5, 2.0, 1.6, 0.3], [5, -3, 0.9, 0.8, 0.7, 1.8, 1.0], [20, 5, 0.9, 1.8, 0.6, 1.7, 2.0],
                   [30, 0, 2, 0.6, 0.6, 2.5, 0.0]], ["Vehicle", "Pedestrian", "Cyclist", "Sign"], [300, 40, 30, 50]),
          gt_info([[-15, 8, 1, 4.2, 1.9, 1.5, -2.5], [7, 7, 1, 4.0, 1.8, 1.5, 0.0]], ["Vehicle", "Vehicle"], [120, 0])]


def as_predictions(frames, score=0.8):
    out = []
    for info in frames:
        keep = np.isin(info["name"], CLASSES) & (info["num_points_in_gt"] > 0)  # what the metric evaluates
        out.append({"name": info["name"][keep], "boxes_lidar": info["gt_boxes_lidar"][keep],
                    "score": np.full(int(keep.sum()), score)})
    return out


def test_ground_truth_arrays_follow_openpcdet_rules():
    """Classes outside the config dropped (Sign); a box without points kept here (the runner drops it, as the
    official tool does) with its point count; unknown difficulty stays 0 for the runner to resolve."""
    arrays = waymo_eval.infos_to_arrays(FRAMES, CLASSES, True, fake_gt_infos=False)
    assert arrays["types"].tolist() == [1, 2, 4, 1, 1] and arrays["frame_ids"].tolist() == [0, 0, 0, 1, 1]
    assert arrays["num_points"].tolist() == [300, 40, 30, 120, 0] and arrays["difficulty"].tolist() == [0] * 5


def test_fake_lidar_boxes_become_lidar_boxes():
    """[x, y, z_bottom, w, l, h, r] -> [x, y, z_bottom + h / 2, l, w, h, -(r + pi / 2)] (heading wrapped)."""
    info = gt_info([[1.0, 2.0, 0.5, 2.0, 4.0, 1.6, 0.2]], ["Vehicle"], [10])
    boxes = waymo_eval.infos_to_arrays([info], CLASSES, True, fake_gt_infos=True)["boxes"]
    np.testing.assert_allclose(boxes[0], [1.0, 2.0, 1.3, 4.0, 2.0, 1.6, -(0.2 + np.pi / 2)])


def test_distance_cut_and_logit_scores():
    pred = as_predictions(FRAMES)
    pred[0]["score"] = np.array([3.0, 0.0, -3.0])
    arrays = waymo_eval.infos_to_arrays(pred, CLASSES, False, distance_thresh=12)
    assert arrays["boxes"][:, 0].tolist() == [10, 5]  # the 20 m and 16 m boxes lie beyond 12.5 m
    # one score above 1 means logits: OpenPCDet squashes them all with a sigmoid
    np.testing.assert_allclose(arrays["scores"], 1 / (1 + np.exp(-np.array([3.0, 0.0]))))


def evaluate_as_openpcdet(pred, gt):
    """What ``WaymoDataset.evaluation`` does with the estimator's answer: one value per key."""
    result = waymo_eval.OpenPCDetWaymoDetectionMetricsEstimator().waymo_evaluation(pred, gt, CLASSES, 1000, False)
    return summarize_waymo({key: value[0] for key, value in result.items()})


@pytest.mark.skipif(_env_missing() is not None, reason=str(_env_missing()))
def test_ground_truth_as_predictions_scores_one_and_a_missed_box_costs_recall():
    row = evaluate_as_openpcdet(as_predictions(FRAMES), FRAMES)
    assert all(row[c] == pytest.approx(1.0, abs=1e-4) for c in row)
    pred = as_predictions(FRAMES)
    pred[1] = {k: v[1:] for k, v in pred[1].items()}  # drop the -15 m vehicle: 1 of the 2 with points found
    row = evaluate_as_openpcdet(pred, FRAMES)
    assert row["Vehicle L1 mAP"] == pytest.approx(0.5, abs=0.03) and row["Pedestrian L1 mAP"] == pytest.approx(1.0)
