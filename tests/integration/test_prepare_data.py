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

from conftest import requires_mmdet3d
from integration import prepare_data as prepare_cli
from integration.data import prepare as prepare_data
from integration.data.nuscenes import generate



def quat_matrix(q):
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
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


@requires_mmdet3d
def test_info_files_written_atomically(prepared):
    root, written = prepared
    assert [os.path.basename(p) for p in written] == ['nuscenes_infos_train.pkl', 'nuscenes_infos_val.pkl']
    assert all(os.path.isfile(p) for p in written)
    assert not [n for n in os.listdir(root) if n.startswith('.prepare_data')]  # staging removed


@requires_mmdet3d
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
        prepare_cli.main(['nuscenes', '--framework', 'openpcdet', '--root', str(tmp_path)])
    assert exc.value.code == 3 and '--pcdet-root' in capsys.readouterr().err
    if importlib.util.find_spec('waymo_open_dataset') is None:
        with pytest.raises(SystemExit) as exc:
            prepare_cli.main(['waymo', '--root', str(tmp_path)])
        err = capsys.readouterr().err
        assert exc.value.code == 3 and 'scripts/setup_waymo.sh' in err and len(err.strip().splitlines()) == 1


# ---- --framework openpcdet: outputs, links, options (a stand-in source tree; nothing is run) --------------------

@pytest.fixture
def openpcdet_layout(tmp_path, monkeypatch):
    """A stand-in OpenPCDet tree (pcdet/__init__.py, the nuScenes dataset config) and a v1.0-mini dataroot; the
    info-generation subprocess is recorded instead of run, and every OpenPCDet dependency counts as present."""
    pcdet = tmp_path / 'OpenPCDet'
    (pcdet / 'pcdet').mkdir(parents=True)
    (pcdet / 'pcdet' / '__init__.py').write_text('')
    cfgs = pcdet / 'tools' / 'cfgs' / 'dataset_configs'
    cfgs.mkdir(parents=True)
    (cfgs / 'nuscenes_dataset.yaml').write_text("DATASET: 'NuScenesDataset'\nMAX_SWEEPS: 10\nVERSION: 'v1.0-trainval'\n")
    root = tmp_path / 'nuscenes'
    (root / 'v1.0-mini').mkdir(parents=True)
    (root / 'v1.0-mini' / 'sample.json').write_text('[]')
    calls = []

    def record(command, **kwargs):
        cfg_file = command[command.index('--cfg_file') + 1]
        with open(cfg_file, encoding='utf-8') as f:
            calls.append((command, f.read()))

    monkeypatch.setattr(prepare_data.subprocess, 'run', record)
    monkeypatch.setattr(prepare_data, 'missing_modules', lambda names: [])
    return pcdet, root, calls


def run_cli(*args):
    with pytest.raises(SystemExit) as exc:
        prepare_cli.main([str(a) for a in args])
    return exc.value.code


def test_openpcdet_links_the_root_and_writes_into_it(openpcdet_layout, capsys):
    pcdet, root, calls = openpcdet_layout
    assert prepare_cli.main(['nuscenes', '--framework', 'openpcdet', '--root', str(root), '--pcdet-root',
                             str(pcdet)]) is None
    link = pcdet / 'data' / 'nuscenes' / 'v1.0-mini'
    assert os.path.islink(link) and os.path.realpath(link) == os.path.realpath(root)
    assert len(calls) == 1 and 'MAX_SWEEPS: 10' in calls[0][1]
    assert f'outputs go to {root}' in capsys.readouterr().out
    prepare_cli.main(['nuscenes', '--framework', 'openpcdet', '--root', str(root), '--pcdet-root', str(pcdet)])
    assert len(calls) == 2  # the same link is reused


def test_openpcdet_honours_max_sweeps_through_a_config_copy(openpcdet_layout):
    pcdet, root, calls = openpcdet_layout
    prepare_cli.main(['nuscenes', '--framework', 'openpcdet', '--root', str(root), '--pcdet-root', str(pcdet),
                      '--max-sweeps', '3'])
    assert 'MAX_SWEEPS: 3' in calls[0][1] and 'MAX_SWEEPS: 10' not in calls[0][1]
    original = pcdet / 'tools' / 'cfgs' / 'dataset_configs' / 'nuscenes_dataset.yaml'
    assert 'MAX_SWEEPS: 10' in original.read_text()


def test_openpcdet_refuses_out_and_a_link_pointing_elsewhere(openpcdet_layout, tmp_path, capsys):
    pcdet, root, calls = openpcdet_layout
    assert run_cli('nuscenes', '--framework', 'openpcdet', '--root', root, '--pcdet-root', pcdet,
                   '--out', tmp_path / 'elsewhere') == 2
    assert '--out' in capsys.readouterr().err
    other = tmp_path / 'other_nuscenes'
    other.mkdir()
    link = pcdet / 'data' / 'nuscenes' / 'v1.0-mini'
    link.parent.mkdir(parents=True)
    os.symlink(other, link)
    assert run_cli('nuscenes', '--framework', 'openpcdet', '--root', root, '--pcdet-root', pcdet) == 2
    err = capsys.readouterr().err
    assert f'a link to {other}' in err and 'CenterPoint PTQ through OpenPCDet' in err and len(err.strip().splitlines()) == 1
    assert os.path.realpath(link) == str(other) and calls == []


def test_openpcdet_without_scikit_image_says_what_to_install(openpcdet_layout, monkeypatch, capsys):
    pcdet, root, calls = openpcdet_layout
    monkeypatch.setattr(prepare_data, 'missing_modules', lambda names: [n for n in names if n == 'skimage'])
    assert run_cli('nuscenes', '--framework', 'openpcdet', '--root', root, '--pcdet-root', pcdet) == 3
    err = capsys.readouterr().err
    assert 'pip install scikit-image' in err and calls == [] and not os.path.lexists(pcdet / 'data')


def test_embedded_default_refuses_a_dataset_of_another_validation_size(tmp_path):
    root = tmp_path / 'old'
    generate(str(root), scenes=['scene-0061', 'scene-0103'], frames_per_scene=1, sweeps_per_frame=0, seed=1)
    with pytest.raises(ValueError, match=r'older synthetic dataset \(1 frames per validation scene'):
        prepare_data.ensure_synthetic_nuscenes(str(root))
