"""Generate a synthetic LiDAR dataset in the nuScenes ``v1.0-mini`` layout.

The unmodified nuscenes-devkit loads it (``NuScenes('v1.0-mini', out_dir)``) and MMDetection3D's
nuScenes converter turns it into info files, so the whole CenterPoint pipeline (loading, training,
inference, nuScenes detection metrics) runs on it. Scene names come from the devkit's mini splits
(``mini_train`` / ``mini_val``) so ``DetectionEval`` finds its split.

Written: the 13 JSON tables, LiDAR key frames ``samples/LIDAR_TOP/*.pcd.bin`` and sweeps
``sweeps/LIDAR_TOP/*.pcd.bin`` (float32 x, y, z, intensity, ring). Camera sensors, calibrations
and key-frame ``sample_data`` records exist because the converter reads them, but no image
files are written: neither the converter nor a LiDAR-only pipeline opens them.

    python integration/data/nuscenes.py --out work_dirs/synthetic_nuscenes
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from integration.data.synthetic.geometry import points_in_boxes, yaw_quaternion  # noqa: E402
from integration.data.synthetic.lidar_model import LidarSpec, scan  # noqa: E402
from integration.data.synthetic.scene_model import build_scene  # noqa: E402
from integration.data.synthetic.tables import (CAMERAS, IMAGE_WH, LIDAR, LIDAR_TRANSLATION,  # noqa: E402
                                          LIDAR_YAW, NuScenesTables, link_chain, pose_matrix,
                                          visibility_token)

VERSION = 'v1.0-mini'
# The devkit's nuscenes.utils.splits.mini_train + mini_val (copied so generation needs no devkit).
MINI_TRAIN = ('scene-0061', 'scene-0553', 'scene-0655', 'scene-0757', 'scene-0796', 'scene-1077',
              'scene-1094', 'scene-1100')
MINI_VAL = ('scene-0103', 'scene-0916')
MINI_SCENES = MINI_TRAIN + MINI_VAL
#: key frames per mini_val scene of the embedded default dataset: 2 x 100 = 200 validation frames resolve a 0.01
#: mAP difference (README: "Statistics"); the 8 training scenes keep 10 key frames each
DEFAULT_VAL_FRAMES_PER_SCENE = 100
KEYFRAME_INTERVAL_S = 0.5    # nuScenes annotates at 2 Hz
ANNOTATION_RADIUS_M = 60.0   # actors annotated within this BEV distance of the ego
BASE_TIMESTAMP_US = 1533201470000000


def _check_args(out_dir, scenes, frames_per_scene, sweeps_per_frame, seed):
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f'seed must be a non-negative int, got {seed!r}')
    if not isinstance(frames_per_scene, (int, np.integer)) or frames_per_scene < 1:
        raise ValueError(f'frames_per_scene must be an int >= 1, got {frames_per_scene!r}')
    if not isinstance(sweeps_per_frame, (int, np.integer)) or sweeps_per_frame < 0:
        raise ValueError(f'sweeps_per_frame must be an int >= 0, got {sweeps_per_frame!r}')
    scenes = list(MINI_SCENES if scenes is None else scenes)
    unknown = [s for s in scenes if s not in MINI_SCENES]
    if unknown or not scenes or len(set(scenes)) != len(scenes):
        raise ValueError(f'scenes must be distinct names from the nuScenes mini splits {list(MINI_SCENES)}; '
                         f'got {scenes!r}')
    if not out_dir:
        raise ValueError('out_dir must be a folder path')
    return [s for s in MINI_SCENES if s in scenes]  # canonical order


def _write_scene(tables, out_dir, name, frames_per_scene, sweeps_per_frame, seed, spec):
    """Simulate one scene and add its records to ``tables``; returns (key frames, annotations)."""
    index = MINI_SCENES.index(name)
    rng = np.random.default_rng([seed, index])
    period = sweeps_per_frame + 1
    dt = KEYFRAME_INTERVAL_S / period
    n_frames = frames_per_scene * period
    model = build_scene(name, index, (n_frames - 1) * dt, rng)

    logfile = f'n015-2018-08-{index % 28 + 1:02d}-{10 + index % 8:02d}-00-00+0800'
    log_token = tables.add_log_and_map(name, logfile, model.location, logfile[5:15])
    calib = tables.add_calibrations(name)
    start_us = BASE_TIMESTAMP_US + index * 3_600_000_000
    scene_token = tables.token('scene', name)
    sample_tokens = [tables.token('sample', name, k) for k in range(frames_per_scene)]
    samples, lidar_records, camera_records = [], [], {c: [] for c in CAMERAS}
    annotations = {actor.key: [] for actor in model.actors}
    lidar_to_ego = pose_matrix(LIDAR_TRANSLATION, LIDAR_YAW)

    for j in range(n_frames):
        t = j * dt
        timestamp = start_us + int(round(t * 1e6))
        is_key = j % period == sweeps_per_frame
        k = j // period
        ego_translation, ego_yaw = model.ego_pose(t)
        ego_pose_token = tables.add_ego_pose((name, j), timestamp, ego_translation, ego_yaw)
        lidar_to_global = pose_matrix(ego_translation, ego_yaw) @ lidar_to_ego
        boxes = model.boxes(t)
        result = scan(spec, lidar_to_global, boxes, model.relief, np.random.default_rng([seed, index, j]))

        folder = 'samples' if is_key else 'sweeps'
        filename = f'{folder}/{LIDAR}/{logfile}__{LIDAR}__{timestamp}.pcd.bin'
        with open(os.path.join(out_dir, filename), 'wb') as f:
            f.write(result.points.tobytes())
        lidar_records.append({
            'token': tables.token('sample_data', name, LIDAR, j), 'sample_token': sample_tokens[k],
            'ego_pose_token': ego_pose_token, 'calibrated_sensor_token': calib[LIDAR],
            'timestamp': timestamp, 'fileformat': 'pcd', 'is_key_frame': is_key,
            'height': 0, 'width': 0, 'filename': filename})
        if not is_key:
            continue

        samples.append({'token': sample_tokens[k], 'timestamp': timestamp, 'scene_token': scene_token})
        for channel in CAMERAS:
            camera_records[channel].append({
                'token': tables.token('sample_data', name, channel, k), 'sample_token': sample_tokens[k],
                'ego_pose_token': ego_pose_token, 'calibrated_sensor_token': calib[channel],
                'timestamp': timestamp, 'fileformat': 'jpg', 'is_key_frame': True,
                'height': IMAGE_WH[1], 'width': IMAGE_WH[0],
                'filename': f'samples/{channel}/{logfile}__{channel}__{timestamp}.jpg'})
        _annotate(tables, model, t, k, sample_tokens[k], lidar_to_global, boxes, result, annotations)

    link_chain(samples)
    link_chain(lidar_records)
    tables.records['sample'].extend(samples)
    tables.records['sample_data'].extend(lidar_records)
    for records in camera_records.values():
        link_chain(records)
        tables.records['sample_data'].extend(records)
    n_annotations = _add_instances(tables, model, annotations)
    tables.records['scene'].append({
        'token': scene_token, 'log_token': log_token, 'nbr_samples': len(samples),
        'first_sample_token': samples[0]['token'], 'last_sample_token': samples[-1]['token'],
        'name': name, 'description': f'synthetic road scene, ego speed {model.ego_speed:.1f} m/s'})
    return len(samples), n_annotations


def _annotate(tables, model, t, k, sample_token, lidar_to_global, boxes, result, annotations):
    """Annotate every actor near the ego on key frame ``k``; point counts come from the cloud."""
    centers, sizes, yaws, _ = boxes
    n_actors = len(model.actors)
    near = np.flatnonzero(np.linalg.norm(centers[:n_actors, :2] - lidar_to_global[:2, 3], axis=1)
                          < ANNOTATION_RADIUS_M)
    xyz = result.points[:, :3].astype(np.float64) @ lidar_to_global[:3, :3].T + lidar_to_global[:3, 3]
    counts = points_in_boxes(xyz, centers[near], sizes[near], yaws[near]).sum(axis=0)
    for i, n_points in zip(near, counts):
        actor = model.actors[i]
        rays = result.box_rays[i]
        attribute = actor.attribute
        annotations[actor.key].append({
            'token': tables.token('sample_annotation', actor.key, k), 'sample_token': sample_token,
            'instance_token': tables.token('instance', actor.key),
            'visibility_token': visibility_token(result.box_returns[i] / rays if rays else 0.0),
            'attribute_tokens': [tables.attribute_token(attribute)] if attribute else [],
            'translation': [float(v) for v in centers[i]], 'size': [float(v) for v in sizes[i]],
            'rotation': yaw_quaternion(yaws[i]),
            'num_lidar_pts': int(n_points), 'num_radar_pts': 0})


def _add_instances(tables, model, annotations):
    count = 0
    for actor in model.actors:
        records = annotations[actor.key]
        if not records:
            continue
        link_chain(records)
        tables.records['sample_annotation'].extend(records)
        tables.records['instance'].append({
            'token': tables.token('instance', actor.key), 'category_token': tables.category_token(actor.name),
            'nbr_annotations': len(records), 'first_annotation_token': records[0]['token'],
            'last_annotation_token': records[-1]['token']})
        count += len(records)
    return count


def generate(out_dir, scenes=None, frames_per_scene=10, sweeps_per_frame=2, seed=0, overwrite=False,
             verbose=False, val_frames_per_scene=None):
    """Write the dataset to ``out_dir`` (atomically: built in a temp folder beside it, then renamed).

    ``scenes``: names from the nuScenes mini splits (default: all ten). ``frames_per_scene``: key
    frames per scene (2 Hz); ``val_frames_per_scene``: key frames of each ``mini_val`` scene (default:
    ``frames_per_scene``). ``sweeps_per_frame``: LiDAR sweeps between consecutive key frames (and
    before the first). Returns a summary dict. An existing non-empty ``out_dir`` is replaced only
    with ``overwrite=True``.
    """
    scenes = _check_args(out_dir, scenes, frames_per_scene, sweeps_per_frame, seed)
    if val_frames_per_scene is None:
        val_frames_per_scene = frames_per_scene
    if not isinstance(val_frames_per_scene, (int, np.integer)) or val_frames_per_scene < 1:
        raise ValueError(f'val_frames_per_scene must be an int >= 1, got {val_frames_per_scene!r}')
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)) and not overwrite:
        raise ValueError(f'out_dir {out_dir} exists and is not empty; pass overwrite=True (--overwrite) '
                         'or choose another folder')
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    start = time.perf_counter()
    staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(out_dir)}.partial-', dir=parent)
    try:
        for folder in ('samples', 'sweeps'):
            os.makedirs(os.path.join(staging, folder, LIDAR))
        tables = NuScenesTables(seed)
        spec = LidarSpec()
        n_samples = n_annotations = 0
        for name in scenes:
            frames = val_frames_per_scene if name in MINI_VAL else frames_per_scene
            samples, annotations = _write_scene(tables, staging, name, int(frames),
                                                int(sweeps_per_frame), int(seed), spec)
            n_samples += samples
            n_annotations += annotations
            if verbose:
                print(f'{name}: {samples} key frames, {annotations} annotations', flush=True)
        tables.write(staging, VERSION)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {'out_dir': out_dir, 'version': VERSION, 'scenes': scenes, 'samples': n_samples,
            'annotations': n_annotations, 'seconds': time.perf_counter() - start}


def count_val_frames(root):
    """Key frames of the first ``mini_val`` scene in the dataset at ``root`` (None when it has none)."""
    with open(os.path.join(root, VERSION, 'scene.json'), encoding='utf-8') as f:
        scenes = {s['name']: s['nbr_samples'] for s in json.load(f)}
    return next((scenes[name] for name in MINI_VAL if name in scenes), None)


def _replace_dir(staging, out_dir):
    os.chmod(staging, 0o755)  # mkdtemp creates 0700
    if not os.path.exists(out_dir):
        os.rename(staging, out_dir)
        return
    old = tempfile.mkdtemp(prefix=f'.{os.path.basename(out_dir)}.old-', dir=os.path.dirname(out_dir))
    os.rename(out_dir, os.path.join(old, 'data'))
    os.rename(staging, out_dir)
    shutil.rmtree(old)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='output folder (the nuScenes dataroot)')
    parser.add_argument('--scenes', nargs='+', default=None, metavar='NAME',
                        help='scene names from the nuScenes mini splits (default: all 10)')
    parser.add_argument('--frames-per-scene', type=int, default=10, help='key frames per scene (default 10)')
    parser.add_argument('--val-frames-per-scene', type=int, default=None,
                        help='key frames per mini_val scene (default: --frames-per-scene)')
    parser.add_argument('--sweeps-per-frame', type=int, default=2,
                        help='LiDAR sweeps between key frames (default 2)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true', help='replace a non-empty --out folder')
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, args.scenes, args.frames_per_scene, args.sweeps_per_frame, args.seed,
                           overwrite=args.overwrite, verbose=True, val_frames_per_scene=args.val_frames_per_scene)
    except (ValueError, TypeError) as exc:
        parser.exit(2, f'nuscenes: error: {exc}\n')
    print(f"wrote {summary['samples']} key frames, {summary['annotations']} annotations "
          f"({len(summary['scenes'])} scenes) to {summary['out_dir']} in {summary['seconds']:.1f} s")


if __name__ == '__main__':
    main()
