"""The synthetic nuScenes generator: table integrity, point-cloud sanity, determinism.

Expectations are computed here from the written files alone (quaternion maths and box
containment are re-implemented below), never read back from the generator's internals.
"""
import filecmp
import importlib.util
import json
import os

import numpy as np
import pytest

from integration.data.nuscenes import generate

SCENES = ['scene-0061', 'scene-0103']  # one mini_train and one mini_val scene
FRAMES = 2
SWEEPS = 1
HAS_DEVKIT = importlib.util.find_spec('nuscenes') is not None


def quat_matrix(q):
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def load_tables(root):
    folder = os.path.join(root, 'v1.0-mini')
    return {name[:-5]: json.load(open(os.path.join(folder, name))) for name in os.listdir(folder)}


def by_token(records):
    return {r['token']: r for r in records}


def load_points(root, filename):
    return np.fromfile(os.path.join(root, filename), dtype=np.float32).reshape(-1, 5)


def lidar_points_global(tables, sd):
    """Key-frame points in the global frame via calibrated_sensor then ego_pose (both from JSON)."""
    cs = by_token(tables['calibrated_sensor'])[sd['calibrated_sensor_token']]
    pose = by_token(tables['ego_pose'])[sd['ego_pose_token']]
    return cs, pose


def count_inside(points_xyz, translation, size_wlh, rotation):
    """Points inside a nuScenes box (size = width, length, height; local x along the length)."""
    local = (points_xyz - np.asarray(translation)) @ quat_matrix(rotation)
    half = np.array([size_wlh[1], size_wlh[0], size_wlh[2]]) / 2.0
    return int(np.all(np.abs(local) <= half, axis=1).sum())


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic') / 'nuscenes')
    summary = generate(root, scenes=SCENES, frames_per_scene=FRAMES, sweeps_per_frame=SWEEPS, seed=3)
    return root, summary, load_tables(root)


def key_lidar_records(tables):
    return [sd for sd in tables['sample_data'] if sd['is_key_frame'] and sd['filename'].endswith('.pcd.bin')]


def test_tables_are_complete_and_linked(dataset):
    root, summary, tables = dataset
    assert {s['name'] for s in tables['scene']} == set(SCENES)
    assert len(tables['sample']) == len(SCENES) * FRAMES == summary['samples']
    lidar = [sd for sd in tables['sample_data'] if sd['filename'].endswith('.pcd.bin')]
    assert len(lidar) == len(SCENES) * FRAMES * (SWEEPS + 1)
    assert sum(not sd['is_key_frame'] for sd in lidar) == len(SCENES) * FRAMES * SWEEPS
    sd_index = by_token(tables['sample_data'])
    for scene in tables['scene']:  # walk each LiDAR chain: timestamps increase, ends are empty
        first = by_token(tables['sample'])[scene['first_sample_token']]
        heads = [sd for sd in lidar if sd['prev'] == '' and by_token(tables['sample'])[sd['sample_token']]
                 ['scene_token'] == scene['token']]
        assert len(heads) == 1
        chain, sd = [], heads[0]
        while True:
            chain.append(sd)
            assert os.path.isfile(os.path.join(root, sd['filename']))
            assert sd['filename'].startswith('samples/' if sd['is_key_frame'] else 'sweeps/')
            if sd['next'] == '':
                break
            sd = sd_index[sd['next']]
        assert len(chain) == FRAMES * (SWEEPS + 1)
        assert all(a['timestamp'] < b['timestamp'] for a, b in zip(chain, chain[1:]))
        assert chain[SWEEPS]['sample_token'] == first['token'] and chain[SWEEPS]['is_key_frame']
    cams = [sd for sd in tables['sample_data'] if sd['filename'].endswith('.jpg')]
    assert len(cams) == 6 * len(SCENES) * FRAMES
    instances = by_token(tables['instance'])
    for ann in tables['sample_annotation']:
        assert ann['instance_token'] in instances
        assert len(ann['attribute_tokens']) <= 1
    assert sum(i['nbr_annotations'] for i in tables['instance']) == len(tables['sample_annotation'])


@pytest.mark.skipif(not HAS_DEVKIT, reason='nuscenes-devkit not installed (bash scripts/setup_mmdet3d.sh)')
def test_devkit_loads_and_splits_resolve(dataset):
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.splits import create_splits_scenes
    root, _, tables = dataset
    nusc = NuScenes('v1.0-mini', root, verbose=False)
    splits = create_splits_scenes()
    names = {s['name'] for s in nusc.scene}
    assert names & set(splits['mini_train']) == {'scene-0061'}
    assert names & set(splits['mini_val']) == {'scene-0103'}
    for sample in nusc.sample:
        assert set(sample['data']) == {'LIDAR_TOP', 'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT',
                                       'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT'}
        path, boxes, _ = nusc.get_sample_data(sample['data']['LIDAR_TOP'])
        assert os.path.isfile(path)
    moving = [a for a in nusc.sample_annotation if a['next'] or a['prev']]
    assert moving and all(np.all(np.isfinite(nusc.box_velocity(a['token'])[:2])) for a in moving)


def test_num_lidar_pts_matches_points_inside_boxes(dataset):
    root, _, tables = dataset
    anns_by_sample = {}
    for ann in tables['sample_annotation']:
        anns_by_sample.setdefault(ann['sample_token'], []).append(ann)
    checked = with_points = 0
    for sd in key_lidar_records(tables):
        cs, pose = lidar_points_global(tables, sd)
        pts = load_points(root, sd['filename'])[:, :3].astype(np.float64)
        ego = pts @ quat_matrix(cs['rotation']).T + np.asarray(cs['translation'])
        world = ego @ quat_matrix(pose['rotation']).T + np.asarray(pose['translation'])
        for ann in anns_by_sample.get(sd['sample_token'], []):
            assert ann['num_lidar_pts'] == count_inside(world, ann['translation'], ann['size'], ann['rotation'])
            checked += 1
            with_points += ann['num_lidar_pts'] > 10
    assert checked > 20 and with_points > 5  # the comparison is not vacuous


def test_point_cloud_is_a_plausible_rotating_scan(dataset):
    root, _, tables = dataset
    for sd in key_lidar_records(tables):
        pts = load_points(root, sd['filename'])
        cs = by_token(tables['calibrated_sensor'])[sd['calibrated_sensor_token']]
        ring = pts[:, 4]
        assert np.all(ring == np.round(ring)) and ring.min() == 0 and ring.max() == 31
        assert np.all((pts[:, 3] >= 0) & (pts[:, 3] <= 255))
        assert 10_000 < len(pts) <= 32 * 1000
        # The lowest beam (about -30.67 degrees) hits the ground close to the car: with the sensor
        # mounted ``h`` above the ground those returns lie near z = -h at range h / tan(30.67 deg).
        h = cs['translation'][2]
        low = pts[ring == 0]
        assert abs(np.median(low[:, 2]) + h) < 0.15
        assert abs(np.median(np.linalg.norm(low[:, :2], axis=1)) - h / np.tan(np.deg2rad(30.67))) < 0.3
        assert np.mean(pts[:, 2] < -h + 0.5) > 0.2  # plenty of ground returns overall


def test_motion_and_attributes_are_consistent(dataset):
    _, _, tables = dataset
    samples = by_token(tables['sample'])
    attributes = {a['token']: a['name'] for a in tables['attribute']}
    anns = by_token(tables['sample_annotation'])
    seen_moving = seen_static = 0
    for ann in tables['sample_annotation']:
        if not ann['next']:
            continue
        nxt = anns[ann['next']]
        dt = (samples[nxt['sample_token']]['timestamp'] - samples[ann['sample_token']]['timestamp']) / 1e6
        step = np.asarray(nxt['translation'][:2]) - np.asarray(ann['translation'][:2])
        speed = np.linalg.norm(step) / dt
        heading = quat_matrix(ann['rotation'])[:2, 0]
        name = attributes[ann['attribute_tokens'][0]] if ann['attribute_tokens'] else None
        if speed > 0.2:
            assert abs(abs(step @ heading) / np.linalg.norm(step) - 1.0) < 1e-6  # moves along its heading
            assert name in ('vehicle.moving', 'cycle.with_rider', 'pedestrian.moving')
            seen_moving += 1
        else:
            assert speed < 1e-9
            assert name in (None, 'vehicle.parked', 'vehicle.stopped', 'cycle.without_rider',
                            'pedestrian.standing')
            seen_static += 1
    assert seen_moving > 3 and seen_static > 3


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    dirs = [tmp_path / name for name in ('a', 'b', 'c')]
    for folder, seed in zip(dirs, (5, 5, 6)):
        generate(str(folder), scenes=['scene-0916'], frames_per_scene=1, sweeps_per_frame=0, seed=seed)

    def files(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)

    assert files(dirs[0]) == files(dirs[1])
    match, mismatch, errors = filecmp.cmpfiles(dirs[0], dirs[1], files(dirs[0]), shallow=False)
    assert not mismatch and not errors and len(match) == len(files(dirs[0]))
    cloud = [f for f in files(dirs[0]) if f.endswith('.pcd.bin')][0]
    other = [f for f in files(dirs[2]) if f.endswith('.pcd.bin')][0]
    assert (dirs[0] / cloud).read_bytes() != (dirs[2] / other).read_bytes()


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match='scenes'):
        generate(str(tmp_path / 'x'), scenes=['scene-9999'])
    with pytest.raises(ValueError, match='frames_per_scene'):
        generate(str(tmp_path / 'x'), frames_per_scene=0)
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'keep.txt').write_text('user data')
    with pytest.raises(ValueError, match='overwrite'):
        generate(str(tmp_path / 'full'), scenes=['scene-0916'], frames_per_scene=1)
    assert (tmp_path / 'full' / 'keep.txt').read_text() == 'user data'
    assert sorted(os.listdir(tmp_path)) == ['full']  # nothing half-written left behind


def test_validation_scenes_get_their_own_frame_count(tmp_path):
    from integration.data.nuscenes import count_val_frames
    root = tmp_path / 'd'
    generate(str(root), scenes=['scene-0061', 'scene-0103'], frames_per_scene=1, sweeps_per_frame=0, seed=2,
             val_frames_per_scene=3)
    scenes = {s['name']: s['nbr_samples'] for s in load_tables(str(root))['scene']}
    assert scenes == {'scene-0061': 1, 'scene-0103': 3}
    assert count_val_frames(str(root)) == 3
    with pytest.raises(ValueError, match='val_frames_per_scene'):
        generate(str(tmp_path / 'x'), val_frames_per_scene=0)
