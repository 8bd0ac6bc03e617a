"""Write a synthetic Waymo Open Dataset: segments of ``dataset_pb2.Frame`` records plus ``gt.bin``.

Layout under ``out_dir`` (both frameworks' layouts; ``raw_data/`` holds hard links of the same files):

    waymo_format/training/segment-<name>_with_camera_labels.tfrecord   (MMDetection3D)
    waymo_format/validation/segment-<name>_with_camera_labels.tfrecord
    waymo_format/gt.bin             validation ground truth, ``metrics_pb2.Objects``
    raw_data/segment-*.tfrecord     (OpenPCDet: every segment)
    ImageSets/train.txt, val.txt    (OpenPCDet: tfrecord file names per split)
    synthetic_waymo.json            generation parameters and counts

Everything is written into a temporary folder beside ``out_dir`` and renamed into place at the end.
"""
import json
import os
import shutil
import tempfile
import time

import numpy as np

from pytorch_quantization.ptq.atomic_io import atomic_write, atomic_write_text

from .frame_builder import FrameBuilder
from .protos import waymo_module
from .rig import TOP_COLUMNS, TOP_ROWS
from .simulate import SegmentSimulator
from .tfrecord import write_records

MANIFEST = 'synthetic_waymo.json'
# bumped when the same arguments generate different data; 2: vehicles and cycles ray-cast with a lower front
GENERATOR_VERSION = 2


def _int_arg(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
    return int(value)


def check_args(out_dir, segments, frames, val_segments, seed, columns, rows):
    """Validate generation parameters; returns the number of validation segments."""
    if not out_dir:
        raise ValueError('out_dir must be a folder path')
    segments = _int_arg('segments', segments, 2)
    _int_arg('frames', frames, 1)
    _int_arg('seed', seed, 0)
    _int_arg('columns', columns, 16)
    _int_arg('rows', rows, 2)
    if val_segments is None:
        val_segments = max(1, segments // 4)
    if _int_arg('val_segments', val_segments, 1) >= segments:
        raise ValueError(f'val_segments must leave at least one training segment: got {val_segments} '
                         f'of {segments} segments')
    return val_segments


def tfrecord_name(context_name):
    return f'segment-{context_name}_with_camera_labels.tfrecord'


def generate(out_dir, segments=4, frames=5, val_segments=None, seed=0, columns=TOP_COLUMNS, rows=TOP_ROWS,
             overwrite=False, log=print):
    """Generate the dataset into ``out_dir``; returns the manifest dict (also written to ``MANIFEST``).

    ``out_dir`` must not exist (or be empty) unless ``overwrite``; it is replaced only after the
    whole dataset has been written.
    """
    val_segments = check_args(out_dir, segments, frames, val_segments, seed, columns, rows)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f'out_dir {out_dir} is not empty; choose another folder or pass overwrite=True '
                              f'(--overwrite)')
    metrics_pb2 = waymo_module('protos.metrics_pb2')
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.tmp_waymo_', dir=os.path.dirname(out_dir))
    try:
        manifest = _write_all(tmp, segments, frames, val_segments, seed, columns, rows, metrics_pb2, log)
        old = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix='.old_waymo_', dir=os.path.dirname(out_dir))
            os.replace(out_dir, os.path.join(old, 'data'))
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return manifest


def _write_all(root, segments, frames, val_segments, seed, columns, rows, metrics_pb2, log):
    splits = {'training': [], 'validation': []}
    for sub in ('waymo_format/training', 'waymo_format/validation', 'raw_data', 'ImageSets'):
        os.makedirs(os.path.join(root, sub))
    gt = metrics_pb2.Objects()
    counts = {'training': {'frames': 0, 'labels': {}}, 'validation': {'frames': 0, 'labels': {}}}
    for index in range(segments):
        split = 'validation' if index >= segments - val_segments else 'training'
        start = time.time()
        sim = SegmentSimulator(seed, index, frames, columns, rows)
        builder = FrameBuilder(sim)
        records = []
        for j in range(frames):
            frame = builder.build(sim.frame(j))
            records.append(frame.SerializeToString())
            _count(counts[split], frame)
            if split == 'validation':
                for label in frame.laser_labels:
                    obj = gt.objects.add()
                    obj.object.CopyFrom(label)
                    obj.context_name = frame.context.name
                    obj.frame_timestamp_micros = frame.timestamp_micros
        name = tfrecord_name(sim.name)
        path = os.path.join(root, 'waymo_format', split, name)
        write_records(path, records)
        _link_or_copy(path, os.path.join(root, 'raw_data', name))
        splits[split].append(name)
        log(f'[waymo] {split} {name}: {frames} frames, {os.path.getsize(path) / 1e6:.1f} MB, '
            f'{time.time() - start:.1f} s')
    atomic_write(os.path.join(root, 'waymo_format', 'gt.bin'), lambda f: f.write(gt.SerializeToString()))
    for split, listing in (('training', 'train.txt'), ('validation', 'val.txt')):
        atomic_write_text(os.path.join(root, 'ImageSets', listing), ''.join(f'{n}\n' for n in splits[split]))
    manifest = {'generator_version': GENERATOR_VERSION, 'segments': segments, 'frames': frames,
                'val_segments': val_segments, 'seed': seed, 'columns': columns, 'rows': rows, 'splits': splits,
                'counts': counts, 'gt_objects': len(gt.objects)}
    atomic_write_text(os.path.join(root, MANIFEST), json.dumps(manifest, indent=1))
    return manifest


def _count(totals, frame):
    totals['frames'] += 1
    for label in frame.laser_labels:
        key = str(label.type)
        totals['labels'][key] = totals['labels'].get(key, 0) + 1


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
