"""Waymo detection metrics (mAP / mAPH, LEVEL_1 / LEVEL_2, per type and range) for any environment.

The official op ``py_metrics_ops.detection_metrics`` only loads under TensorFlow 2.13, so the
evaluation runs ``metric_runner.py`` in the separate metrics environment (``.venv-waymo-metrics``,
made by ``scripts/setup_waymo.sh``; ``WAYMO_METRICS_VENV`` names another such environment, as it does for the
set-up script, and ``WAYMO_METRICS_PYTHON`` another interpreter) and reads
back its JSON. Inputs are ``metrics_pb2.Objects`` (a message, its bytes or a ``.bin`` path) or dicts
of arrays (see ``metric_runner``).

As a command it stands in for the official ``compute_detection_metrics_main`` binary (which
MMDetection3D's ``WaymoMetric`` calls and no package ships): same arguments, same printed lines.

    python -m integration.data.waymo.metric PREDICTIONS.bin GT.bin
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from .protos import SETUP_COMMAND, WaymoEnvironmentError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
METRICS_VENV = '.venv-waymo-metrics'
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'metric_runner.py')
TYPES = (('Vehicle', 'TYPE_VEHICLE'), ('Pedestrian', 'TYPE_PEDESTRIAN'), ('Sign', 'TYPE_SIGN'),
         ('Cyclist', 'TYPE_CYCLIST'))
OVERALL_TYPES = ('Vehicle', 'Pedestrian', 'Cyclist')  # MMDetection3D's and OpenPCDet's "Overall"
LEVEL_KINDS = ('L2 mAPH', 'L2 mAP', 'L1 mAPH', 'L1 mAP')  # headline first
#: the driver's table columns for Waymo: overall, then per class (the summary's "Overall/L2 mAPH" -> "L2 mAPH")
TABLE_COLUMNS = list(LEVEL_KINDS) + [f'{t} {k}' for t in OVERALL_TYPES for k in LEVEL_KINDS]
GT_KEYS, PRED_KEYS = ('boxes', 'types', 'frame_ids', 'difficulty'), ('boxes', 'types', 'frame_ids', 'scores')


def metrics_python():
    """The metrics environment's interpreter, or a one-line error naming the set-up command."""
    venv = os.environ.get('WAYMO_METRICS_VENV') or os.path.join(REPO_ROOT, METRICS_VENV)
    python = os.environ.get('WAYMO_METRICS_PYTHON') or os.path.join(venv, 'bin', 'python')
    if not os.path.isfile(python):
        raise WaymoEnvironmentError(f'the Waymo metrics environment is missing ({python} not found); '
                                    f'create it with `{SETUP_COMMAND}`')
    return python


def _check_arrays(name, arrays, keys):
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f'{name} is missing arrays {missing}; expected {list(keys)}')
    boxes = np.asarray(arrays['boxes'])
    if boxes.ndim != 2 or boxes.shape[1] != 7:
        raise ValueError(f'{name}["boxes"] must have shape [N, 7] (x, y, z, length, width, height, heading); '
                         f'got {boxes.shape}')
    for key in keys[1:] + (('num_points',) if 'num_points' in arrays else ()):
        if np.shape(arrays[key]) != (len(boxes),):
            raise ValueError(f'{name}["{key}"] must have shape [{len(boxes)}]; got {np.shape(arrays[key])}')
    if np.any((np.asarray(arrays['types']) < 0) | (np.asarray(arrays['types']) > 4)):
        raise ValueError(f'{name}["types"] must hold Waymo label types 0..4')
    if 'scores' in keys and np.any((np.asarray(arrays['scores']) < 0) | (np.asarray(arrays['scores']) > 1)):
        raise ValueError(f'{name}["scores"] must lie in [0, 1]')


def _stage(name, value, folder, keys):
    """Write one input where the runner can read it; returns its path."""
    if isinstance(value, (str, os.PathLike)):
        if not os.path.isfile(value) or not os.fspath(value).endswith('.bin'):
            raise ValueError(f'{name} path {value} must be an existing metrics_pb2.Objects .bin file')
        return os.path.abspath(value)
    if isinstance(value, dict):
        _check_arrays(name, value, keys)
        path = os.path.join(folder, f'{name}.npz')
        np.savez(path, **{k: np.asarray(v) for k, v in value.items()})
        return path
    data = value.SerializeToString() if hasattr(value, 'SerializeToString') else value
    if not isinstance(data, bytes):
        raise TypeError(f'{name} must be a metrics_pb2.Objects, its bytes, a .bin path or a dict of arrays; '
                        f'got {type(value).__name__}')
    path = os.path.join(folder, f'{name}.bin')
    with open(path, 'wb') as f:
        f.write(data)
    return path


def evaluate(gt, pred):
    """Evaluate ``pred`` against ``gt``; both Objects-like or both dicts of arrays.

    Returns ``{'breakdowns': {name: {'mAP', 'mAPH'}}, 'Vehicle/L1 mAP': ..., 'Overall/L2 mAPH': ...}``.
    """
    if isinstance(gt, dict) != isinstance(pred, dict):
        raise ValueError('gt and pred must both be dicts of arrays or both metrics_pb2.Objects inputs')
    python = metrics_python()
    with tempfile.TemporaryDirectory(prefix='waymo_metric_') as folder:
        gt_path = _stage('gt', gt, folder, GT_KEYS)
        pred_path = _stage('pred', pred, folder, PRED_KEYS)
        out = os.path.join(folder, 'result.json')
        env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
        env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
        proc = subprocess.run([python, RUNNER, gt_path, pred_path, out], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ['no output'])[-1]
            raise RuntimeError(f'the Waymo metric failed (exit {proc.returncode}): {tail}')
        with open(out) as f:
            breakdowns = json.load(f)
    return dict(summarize(breakdowns), breakdowns=breakdowns)


def summarize(breakdowns):
    """MMDetection3D's keys: ``<Type>/L<k> mAP`` / ``mAPH`` and their ``Overall`` mean."""
    summary = {}
    for label, type_name in TYPES:
        for level in (1, 2):
            values = breakdowns[f'OBJECT_TYPE_{type_name}_LEVEL_{level}']
            summary[f'{label}/L{level} mAP'] = values['mAP']
            summary[f'{label}/L{level} mAPH'] = values['mAPH']
    for level in (1, 2):
        for kind in ('mAP', 'mAPH'):
            summary[f'Overall/L{level} {kind}'] = float(np.mean([summary[f'{t}/L{level} {kind}']
                                                                for t in OVERALL_TYPES]))
    return summary


def table_row(summary):
    """``TABLE_COLUMNS`` -> value from a ``summarize`` dict (keys such as ``Vehicle/L2 mAPH``, maybe prefixed
    like ``Waymo metric/Vehicle/L2 mAPH`` as mmengine reports them)."""
    plain = {key.split('/', 1)[1] if key.count('/') == 2 else key: value for key, value in summary.items()}
    row = {}
    for column in TABLE_COLUMNS:
        label, kind = ('Overall', column) if column in LEVEL_KINDS else column.split(' ', 1)
        row[column] = float(plain[f'{label}/{kind}'])
    return row


def official_lines(breakdowns):
    """The lines the official ``compute_detection_metrics_main`` prints (and ``WaymoMetric`` parses)."""
    return [f'{name}: [mAP {v["mAP"]:g}] [mAPH {v["mAPH"]:g}]' for name, v in breakdowns.items()]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print('usage: python -m integration.data.waymo.metric PREDICTIONS.bin GT.bin', file=sys.stderr)
        return 2
    try:
        result = evaluate(argv[1], argv[0])
    except (ValueError, WaymoEnvironmentError, RuntimeError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print('\n'.join(official_lines(result['breakdowns'])))
    return 0


if __name__ == '__main__':
    sys.exit(main())
