"""integration/prepare_data.py: MMDetection3D's own nuScenes converter on a generated dataset.

The round trip checks what NuScenesDataset 1.4 loads from the info files against the JSON tables:
sample counts per split and, per sample, the boxes (centres transformed into the LiDAR frame
here, with quaternion maths written in this file).
"""
import importlib.util
import json
import os

import numpy as np
import pytest

from integration.data import prepare as prepare_data
from integration.data.nuscenes import generate

STACK = ('mmdet3d', 'nuscenes', 'mmengine', 'mmcv')
HAS_STACK = all(importlib.util.find_spec(m) is not None for m in STACK)
needs_stack = pytest.mark.skipif(not HAS_STACK, reason='MMDetection3D stack not installed '
                                 '(bash scripts/setup_mmdet3d.sh)')


def quat_matrix(q):
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    if not HAS_STACK:
        pytest.skip('MMDetection3D stack not installed (bash scripts/setup_mmdet3d.sh)')
    root = str(tmp_path_factory.mktemp('prep') / 'nuscenes')
    generate(root, scenes=['scene-0061', 'scene-0103'], frames_per_scene=2, sweeps_per_frame=1, seed=11)
    written = prepare_data.prepare_nuscenes_mmdet3d(root)
    return root, written


def expected_boxes(root, split_scene):
    """Per key frame of ``split_scene``, in time order: LiDAR-frame centres of boxes with points."""
    t = {n[:-5]: json.load(open(os.path.join(root, 'v1.0-mini', n)))
         for n in os.listdir(os.path.join(root, 'v1.0-mini'))}
    idx = {name: {r['token']: r for r in t[name]} for name in ('sample_data', 'calibrated_sensor', 'ego_pose')}
    scene = next(s for s in t['scene'] if s['name'] == split_scene)
    out = []
    for sample in sorted((s for s in t['sample'] if s['scene_token'] == scene['token']),
                         key=lambda s: s['timestamp']):
        sd = next(r for r in t['sample_data'] if r['sample_token'] == sample['token'] and r['is_key_frame']
                  and r['filename'].endswith('.pcd.bin'))
        cs, pose = idx['calibrated_sensor'][sd['calibrated_sensor_token']], idx['ego_pose'][sd['ego_pose_token']]
        centres = []
        for ann in t['sample_annotation']:
            if ann['sample_token'] == sample['token'] and ann['num_lidar_pts'] > 0:
                ego = quat_matrix(pose['rotation']).T @ (np.asarray(ann['translation']) - pose['translation'])
                centres.append(quat_matrix(cs['rotation']).T @ (ego - np.asarray(cs['translation'])))
        out.append((sample['token'], np.array(centres).reshape(-1, 3)))
    return out


@needs_stack
def test_info_files_written_atomically(prepared):
    root, written = prepared
    assert [os.path.basename(p) for p in written] == ['nuscenes_infos_train.pkl', 'nuscenes_infos_val.pkl']
    assert all(os.path.isfile(p) for p in written)
    assert not [n for n in os.listdir(root) if n.startswith('.prepare_data')]  # staging removed


@needs_stack
@pytest.mark.parametrize('split,scene', [('train', 'scene-0061'), ('val', 'scene-0103')])
def test_nuscenes_dataset_loads_infos_matching_tables(prepared, split, scene):
    from mmdet3d.datasets import NuScenesDataset
    root, _ = prepared
    dataset = NuScenesDataset(data_root=root, ann_file=f'nuscenes_infos_{split}.pkl', pipeline=[],
                              data_prefix=dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP', img=''),
                              modality=dict(use_lidar=True, use_camera=False), filter_empty_gt=False)
    expected = expected_boxes(root, scene)
    assert len(dataset) == len(expected) == 2
    infos = sorted((dataset.get_data_info(i) for i in range(len(dataset))), key=lambda d: d['timestamp'])
    for info, (token, centres) in zip(infos, expected):
        assert info['token'] == token
        assert os.path.isfile(info['lidar_points']['lidar_path'])
        assert all(os.path.isfile(s['lidar_points']['lidar_path']) for s in info['lidar_sweeps'])
        boxes = info['ann_info']['gt_bboxes_3d']
        assert len(boxes) == len(centres) > 0
        np.testing.assert_allclose(boxes.gravity_center.numpy(), centres, atol=1e-3)


def test_missing_version_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match='--root'):
        prepare_data.detect_nuscenes_version(str(tmp_path))
    with pytest.raises(ValueError, match='--version'):
        prepare_data.detect_nuscenes_version(str(tmp_path), 'v2.0')


def test_missing_frameworks_exit_nonzero_with_install_hint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        prepare_data.main(['nuscenes', '--framework', 'openpcdet', '--root', str(tmp_path)])
    assert exc.value.code == 3 and '--pcdet-root' in capsys.readouterr().err
    if importlib.util.find_spec('waymo_open_dataset') is None:
        with pytest.raises(SystemExit) as exc:
            prepare_data.main(['waymo', '--root', str(tmp_path)])
        err = capsys.readouterr().err
        assert exc.value.code == 3 and 'pip install' in err and len(err.strip().splitlines()) == 1
