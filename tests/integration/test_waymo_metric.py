"""Our Waymo evaluator over the official metrics op, checked against hand computations.

Waymo's AP is the area under the precision envelope (the best precision at any recall >= r, with
precision 1 at recall 0 replaced by the envelope's first value), integrated by trapezoids on a
0.05 recall grid: a drop of the envelope from p_hi to p_lo at recall r costs an extra
0.05 * (p_hi - p_lo) / 2 compared with the step function. APH uses the same recalls with
precision counting each true positive by its heading accuracy 1 - |dheading| / pi. Boxes of known
IoU come from shifting a box along its heading by d: IoU = (L - d) / (L + d). Skips when the metrics
environment (``bash scripts/setup_waymo.sh``) is missing.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from integration.data.waymo.metric import evaluate, metrics_python, official_lines
from integration.data.waymo.protos import WaymoEnvironmentError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VEHICLE, PEDESTRIAN, CYCLIST = 1, 2, 4
L1, L2 = 1, 2


def metrics_env_missing():
    try:
        metrics_python()
    except WaymoEnvironmentError as exc:
        return str(exc)
    return None


needs_env = pytest.mark.skipif(metrics_env_missing() is not None, reason=str(metrics_env_missing()))


def box(x, y, length, width, heading=0.0, height=1.5):
    return [x, y, 1.0, length, width, height, heading]


def arrays(rows, **extra):
    """rows: (box, type, frame) triples -> the evaluator's array dict."""
    out = {'boxes': np.array([r[0] for r in rows], dtype=np.float32).reshape(-1, 7),
           'types': np.array([r[1] for r in rows], dtype=np.int64),
           'frame_ids': np.array([r[2] for r in rows], dtype=np.int64)}
    out.update({k: np.asarray(v) for k, v in extra.items()})
    return out


def shifted(b, d):
    """``b`` moved by ``d`` along its heading."""
    x, y, z, length, width, height, heading = b
    return [x + d * np.cos(heading), y + d * np.sin(heading), z, length, width, height, heading]


@needs_env
def test_hand_computed_ap_and_aph():
    cars = [box(10.0 * i + 5, 3.0, 4.0, 2.0, 0.3) for i in range(4)]  # 5.8, 15.3, 25.2, 35.1 m away
    ped = box(12.0, -4.0, 0.8, 0.8, 0.1)
    cyclists = [box(8.0, 8.0, 1.8, 0.6, 1.0), box(14.0, 9.0, 1.8, 0.6, -0.5)]
    gt = arrays([(b, VEHICLE, 0) for b in cars] + [(ped, PEDESTRIAN, 0)] + [(b, CYCLIST, 0) for b in cyclists]
                + [(box(20.0, -8.0, 1.8, 0.6), CYCLIST, 0)],
                difficulty=[L1] * 4 + [L1] + [L1, L2] + [L1], num_points=[50] * 7 + [0])
    assert (4.0 - 0.6) / (4.0 + 0.6) > 0.7 > (4.0 - 0.8) / (4.0 + 0.8)
    pred_rows = [(cars[0], VEHICLE, 0), (cars[1], VEHICLE, 0),
                 (shifted(cars[2], 0.6), VEHICLE, 0),    # IoU 0.739: a true positive
                 (shifted(cars[3], 0.8), VEHICLE, 0),    # IoU 0.667: a false positive (and a miss)
                 (ped[:6] + [ped[6] + np.pi / 2], PEDESTRIAN, 0),  # square footprint: IoU 1, heading half wrong
                 (cyclists[0], CYCLIST, 0)]             # the LEVEL_2 cyclist is missed
    scores = [0.9, 0.85, 0.8, 0.95, 0.9, 0.9]
    result = evaluate(gt, arrays(pred_rows, scores=scores))
    # Vehicles by score: FP 0.95, TPs 0.9, 0.85, 0.8 -> (R, P) = (0, 0), (1/4, 1/2), (1/2, 2/3), (3/4, 3/4):
    # the envelope is 3/4 from recall 0 to 3/4, without drops.
    assert result['Vehicle/L1 mAP'] == pytest.approx(0.75 * 0.75, abs=1e-4)
    assert result['Vehicle/L1 mAPH'] == pytest.approx(0.75 * 0.75, abs=1e-4)
    # One pedestrian matched with heading accuracy 1/2: recall 1, heading-weighted precision 1/2.
    assert result['Pedestrian/L1 mAP'] == pytest.approx(1.0, abs=1e-4)
    assert result['Pedestrian/L1 mAPH'] == pytest.approx(0.5, abs=1e-4)
    # The 0-point cyclist is ignored; the LEVEL_2 one only counts at LEVEL_2: recall 1 at L1, 1/2 at L2.
    assert result['Cyclist/L1 mAP'] == pytest.approx(1.0, abs=1e-4)
    assert result['Cyclist/L2 mAP'] == pytest.approx(0.5, abs=1e-4)
    assert result['Overall/L2 mAP'] == pytest.approx((0.5625 + 1.0 + 0.5) / 3, abs=1e-4)
    breakdowns = result['breakdowns']
    # Range shards by distance from the vehicle: cars at 5.9, 15.3 (TP), 25.2 (TP), 35.1 m (missed).
    assert breakdowns['RANGE_TYPE_VEHICLE_[30, 50)_LEVEL_1']['mAP'] == pytest.approx(0.0, abs=1e-4)
    assert breakdowns['RANGE_TYPE_PEDESTRIAN_[0, 30)_LEVEL_1']['mAP'] == pytest.approx(1.0, abs=1e-4)
    lines = official_lines(breakdowns)
    assert lines[0].startswith('OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1: [mAP 0.56')


@needs_env
def test_heading_weighting_and_ranking():
    squares = [box(6.0, 0.0, 2.0, 2.0, 0.2), box(12.0, 0.0, 2.0, 2.0, -0.4)]
    gt = arrays([(b, VEHICLE, 3) for b in squares], difficulty=[L1, L1])
    turned = squares[1][:6] + [squares[1][6] + np.pi / 2]
    pred = arrays([(squares[0], VEHICLE, 3), (turned, VEHICLE, 3)], scores=[0.9, 0.8])
    result = evaluate(gt, pred)
    # AP 1; heading-weighted precision 1 at recall 1/2, (1 + 1/2) / 2 = 3/4 at recall 1: the envelope
    # is 1 up to 1/2 then 3/4, plus the 0.05-grid ramp at the drop.
    assert result['Vehicle/L1 mAP'] == pytest.approx(1.0, abs=1e-4)
    assert result['Vehicle/L1 mAPH'] == pytest.approx(0.5 * 1.0 + 0.5 * 0.75 + 0.05 * 0.25 / 2, abs=1e-4)
    # A box turned by 90 degrees that is not square overlaps by IoU 1/3 < 0.7: no match at all.
    long_box = box(6.0, 0.0, 4.0, 2.0, 0.2)
    result = evaluate(arrays([(long_box, VEHICLE, 0)], difficulty=[L1]),
                      arrays([(long_box[:6] + [0.2 + np.pi / 2], VEHICLE, 0)], scores=[0.9]))
    assert result['Vehicle/L1 mAP'] == pytest.approx(0.0, abs=1e-4)


@pytest.fixture(scope='module')
def gt_bin(tmp_path_factory):
    pytest.importorskip('waymo_open_dataset.protos.metrics_pb2', reason='waymo packages missing: run '
                        '`bash scripts/setup_waymo.sh`')
    from integration.data.waymo.generate import generate
    root = str(tmp_path_factory.mktemp('waymo') / 'data')
    generate(root, 2, 2, seed=5, columns=240, rows=16, log=lambda *_: None)
    return os.path.join(root, 'waymo_format', 'gt.bin')


def gt_as_predictions(gt_path):
    from waymo_open_dataset.protos import metrics_pb2
    pred = metrics_pb2.Objects()
    pred.ParseFromString(open(gt_path, 'rb').read())
    for o in pred.objects:
        o.score = 0.5
    return pred


@needs_env
def test_ground_truth_as_predictions_scores_one(gt_bin):
    result = evaluate(gt_bin, gt_as_predictions(gt_bin))
    for key in ('Vehicle', 'Pedestrian', 'Cyclist', 'Overall'):
        for level in (1, 2):
            assert result[f'{key}/L{level} mAP'] == pytest.approx(1.0, abs=1e-4)
            assert result[f'{key}/L{level} mAPH'] == pytest.approx(1.0, abs=1e-4)


@needs_env
def test_command_prints_what_waymo_metric_parses(gt_bin, tmp_path):
    """``python -m ...metric PRED GT`` as MMDetection3D's WaymoMetric runs the official binary; its
    parser reads the k-th ``mAP `` / ``mAPH `` value as Vehicle, Pedestrian, Sign, Cyclist x L1, L2."""
    pred_path = str(tmp_path / 'pred.bin')
    objects = gt_as_predictions(gt_bin)
    kept = [o for o in objects.objects if o.object.type not in (2, 3)]  # no pedestrian or sign predictions
    del objects.objects[:]
    objects.objects.extend(kept)
    open(pred_path, 'wb').write(objects.SerializeToString())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
    proc = subprocess.run([sys.executable, '-m', 'integration.data.waymo.metric', pred_path, gt_bin],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    ap = [float(part.split(']')[0]) for part in text.split('mAP ')[1:9]]
    aph = [float(part.split(']')[0]) for part in text.split('mAPH ')[1:9]]
    assert ap == aph == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_missing_environment_names_the_setup_command(monkeypatch, tmp_path):
    monkeypatch.setenv('WAYMO_METRICS_PYTHON', str(tmp_path / 'nowhere' / 'python'))
    gt = arrays([(box(5, 0, 4, 2), VEHICLE, 0)], difficulty=[L1])
    with pytest.raises(WaymoEnvironmentError, match='bash scripts/setup_waymo.sh'):
        evaluate(gt, arrays([(box(5, 0, 4, 2), VEHICLE, 0)], scores=[0.5]))


def test_bad_arrays_are_named(monkeypatch):
    monkeypatch.setenv('WAYMO_METRICS_PYTHON', __file__)  # any existing file: validation comes first
    gt = arrays([(box(5, 0, 4, 2), VEHICLE, 0)], difficulty=[L1])
    with pytest.raises(ValueError, match=r'pred\["boxes"\] must have shape \[N, 7\]'):
        evaluate(gt, {'boxes': np.zeros((1, 6)), 'types': [1], 'frame_ids': [0], 'scores': [0.5]})
    with pytest.raises(ValueError, match=r'pred\["scores"\] must lie in \[0, 1\]'):
        evaluate(gt, arrays([(box(5, 0, 4, 2), VEHICLE, 0)], scores=[1.5]))
    with pytest.raises(ValueError, match=r"gt is missing arrays \['difficulty'\]"):
        evaluate(arrays([(box(5, 0, 4, 2), VEHICLE, 0)]), arrays([(box(5, 0, 4, 2), VEHICLE, 0)], scores=[1]))
