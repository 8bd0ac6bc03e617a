"""Waymo Open Dataset preparation with each framework's own converter (behind ``integration/prepare_data.py``).

Input layout (real data as downloaded, or the synthetic set of ``integration.data.waymo``):

    waymo_format/{training,validation}/segment-*.tfrecord, waymo_format/gt.bin     (MMDetection3D)
    raw_data/segment-*.tfrecord, ImageSets/{train,val}.txt                          (OpenPCDet)

``check_input`` refuses, in one line, what would make a converter fail late or silently: the TensorFlow
environment missing, no tfrecords, a truncated or corrupt tfrecord (framing checked without reading the
payloads), a root already converted for the other framework. ``prepare_waymo_mmdet3d`` runs
``tools/create_data.py waymo`` of the mmdet3d wheel (``--version v1.4-mini``: training + validation, or
``v1.4`` when ``waymo_format/testing`` exists) into a temp folder and renames ``kitti_format/`` into place.
``ensure_synthetic_waymo`` generates and converts the driver's default synthetic set once.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

from integration.data.prepare import MMDET3D_STACK, SETUP_HINT, WAYMO_HINT, MissingDependency, _move_into, \
    mmdet3d_tools_dir, require
from integration.data.waymo.tfrecord import TFRecordError, check_framing

#: what each framework's converter leaves in the data root
CONVERTED = {'mmdet3d': 'kitti_format', 'openpcdet': 'waymo_processed_data_v0_5_0'}
SYNTHETIC = dict(segments=8, frames=10, val_segments=2, seed=0, columns=1024)


def _tfrecords(root, framework):
    if framework == 'mmdet3d':
        return {split: sorted(glob.glob(os.path.join(root, 'waymo_format', split, '*.tfrecord')))
                for split in ('training', 'validation')}
    names = {}
    for split, listing in (('training', 'train.txt'), ('validation', 'val.txt')):
        path = os.path.join(root, 'ImageSets', listing)
        if not os.path.isfile(path):
            raise ValueError(f'--root {root} has no ImageSets/{listing} (OpenPCDet lists the segments of each '
                             f'split there, one tfrecord name per line)')
        with open(path, encoding='utf-8') as f:
            names[split] = [os.path.join(root, 'raw_data', line.strip()) for line in f if line.strip()]
    return names


def check_input(root, framework):
    """One-line ``ValueError`` / ``MissingDependency`` for a root the ``framework``'s converter cannot use."""
    require(['waymo_open_dataset', 'tensorflow'], WAYMO_HINT)
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise ValueError(f'--root {root} is not a folder')
    other = 'openpcdet' if framework == 'mmdet3d' else 'mmdet3d'
    if os.path.exists(os.path.join(root, CONVERTED[other])) and not os.path.exists(
            os.path.join(root, CONVERTED[framework])):
        layout = 'waymo_format/' if framework == 'mmdet3d' else 'raw_data/ and ImageSets/'
        if not glob.glob(os.path.join(root, layout.split('/')[0], '**', '*.tfrecord'), recursive=True):
            raise ValueError(f'--root {root} was converted for {other} ({CONVERTED[other]}/) and has no {layout} '
                             f'tfrecords for {framework}; pass the raw Waymo root, or use --framework {other}')
    for split, paths in _tfrecords(root, framework).items():
        if not paths:
            where = f'waymo_format/{split}/' if framework == 'mmdet3d' else 'raw_data/ (per ImageSets)'
            raise ValueError(f'--root {root} has no {split} tfrecords in {where}; download the Waymo Open Dataset '
                             f'segments (or generate the synthetic set: python -m integration.data.waymo --out DIR)')
        for path in paths:
            if not os.path.isfile(path):
                raise ValueError(f'{path} is listed for {split} but does not exist')
            try:
                if check_framing(path) == 0:
                    raise ValueError(f'{path} holds no records; replace it with the downloaded segment')
            except TFRecordError as err:
                raise ValueError(f'{err}; replace the file with a complete download') from None


def prepare_waymo_mmdet3d(root, out_dir=None):
    """``kitti_format/`` (points, images, ``waymo_infos_{train,val,trainval}.pkl``, GT database) in ``out_dir``."""
    require(MMDET3D_STACK, SETUP_HINT)
    check_input(root, 'mmdet3d')
    root = os.path.abspath(root)
    out_dir = os.path.abspath(out_dir or root)
    os.makedirs(out_dir, exist_ok=True)
    version = 'v1.4' if os.path.isdir(os.path.join(root, 'waymo_format', 'testing')) else 'v1.4-mini'
    mim = os.path.dirname(mmdet3d_tools_dir())
    staging = tempfile.mkdtemp(prefix='.prepare_data-', dir=out_dir)
    try:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [mim, os.environ.get('PYTHONPATH')])))
        env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
        # --workers 0: the converter's worker pool forks after TensorFlow is imported
        subprocess.run([sys.executable, os.path.join('tools', 'create_data.py'), 'waymo', '--root-path', root,
                        '--out-dir', staging, '--workers', '0', '--extra-tag', 'waymo', '--version', version],
                       cwd=mim, env=env, check=True)
        _check_converted(os.path.join(staging, 'kitti_format'))
        target = os.path.join(out_dir, 'kitti_format')
        _move_into(os.path.join(staging, 'kitti_format'), target)
        return [target]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_converted(kitti):
    """The converter catches nothing per frame, but a worker error can still leave a split without infos."""
    for split in ('train', 'val'):
        if not os.path.isfile(os.path.join(kitti, f'waymo_infos_{split}.pkl')):
            raise ValueError(f"MMDetection3D's Waymo converter wrote no waymo_infos_{split}.pkl; see its output above")


def ensure_synthetic_waymo(root, log=print):
    """Generate (once) and convert for MMDetection3D (once) the synthetic Waymo set under ``root``."""
    from integration.data.waymo.generate import GENERATOR_VERSION, MANIFEST, generate
    from integration.data.waymo.protos import WaymoEnvironmentError
    manifest = os.path.join(root, MANIFEST)
    if os.path.isfile(manifest):
        with open(manifest, encoding='utf-8') as f:
            found = json.load(f).get('generator_version', 1)
        if found != GENERATOR_VERSION:
            raise ValueError(f'{root} holds an older synthetic Waymo set (generator version {found}, this version '
                             f'makes {GENERATOR_VERSION}); remove {root} to regenerate it, or pass --data-root')
    elif os.path.isdir(root) and os.listdir(root):
        raise ValueError(f'{root} exists but holds no synthetic Waymo set ({MANIFEST}); remove it to regenerate, '
                         f'or pass --data-root')
    else:
        log(f'generating the synthetic Waymo-format dataset in {root} (once)')
        try:
            generate(root, SYNTHETIC['segments'], SYNTHETIC['frames'], SYNTHETIC['val_segments'],
                     SYNTHETIC['seed'], SYNTHETIC['columns'], log=log)
        except WaymoEnvironmentError as err:
            raise MissingDependency(str(err)) from None
    if not os.path.isfile(os.path.join(root, 'kitti_format', 'waymo_infos_val.pkl')):
        log(f'converting {root} with MMDetection3D (once)')
        prepare_waymo_mmdet3d(root)
