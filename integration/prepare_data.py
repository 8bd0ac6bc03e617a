"""Produce the dataset info files a detection framework loads, with that framework's own converter.

    python integration/prepare_data.py nuscenes --framework mmdet3d --root work_dirs/synthetic_nuscenes
    python integration/prepare_data.py nuscenes --framework openpcdet --root /data/nuscenes --pcdet-root ~/OpenPCDet
    python integration/prepare_data.py waymo --framework mmdet3d --root /data/waymo   # waymo_format/ -> kitti_format/
    python integration/prepare_data.py waymo --framework openpcdet --root /data/waymo --pcdet-root ~/OpenPCDet

mmdet3d: info files go to --out (default --root). openpcdet: OpenPCDet writes them into the dataset folder
itself (through a link <pcdet-root>/data/nuscenes/<version> -> --root), so --out is refused. The logic is
integration/data/prepare.py (Waymo: integration/data/prepare_waymo.py, which first checks the tfrecords'
framing). A missing package or source tree: one line saying what to install, exit 3;
bad arguments: one line, exit 2.
"""
import argparse
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, REPO_ROOT)

from integration.data import prepare, prepare_waymo  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset', choices=('nuscenes', 'waymo'))
    parser.add_argument('--framework', choices=('mmdet3d', 'openpcdet'), default='mmdet3d')
    parser.add_argument('--root', required=True, help='dataset root (nuScenes dataroot / Waymo raw data)')
    parser.add_argument('--version', choices=prepare.NUSCENES_VERSIONS, default=None,
                        help='nuScenes version (default: the one version folder under --root)')
    parser.add_argument('--out', default=None,
                        help='where the info files go (mmdet3d only; default: --root, where OpenPCDet always writes)')
    parser.add_argument('--max-sweeps', type=int, default=None,
                        help=f'LiDAR sweeps recorded per key frame (default: {prepare.DEFAULT_MAX_SWEEPS} for mmdet3d, '
                             f"the dataset config's MAX_SWEEPS for openpcdet)")
    parser.add_argument('--gt-database', action='store_true',
                        help='also build the ObjectSample ground-truth database (mmdet3d, nuScenes; its '
                             'file paths are relative to --root, so leave --out at its default)')
    parser.add_argument('--pcdet-root', default=None, help='OpenPCDet source tree (openpcdet framework)')
    return parser


def run(args):
    if args.dataset == 'waymo' and args.framework == 'openpcdet':
        prepare_waymo.check_input(args.root, 'openpcdet')
    if args.framework == 'openpcdet':
        return prepare.prepare_openpcdet(args.dataset, args.root, args.version, args.pcdet_root, args.out,
                                         args.max_sweeps)
    if args.dataset == 'waymo':
        return prepare_waymo.prepare_waymo_mmdet3d(args.root, args.out)
    sweeps = prepare.DEFAULT_MAX_SWEEPS if args.max_sweeps is None else args.max_sweeps
    return prepare.prepare_nuscenes_mmdet3d(args.root, args.version, args.out, sweeps, args.gt_database)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        written = run(args)
    except prepare.MissingDependency as exc:
        parser.exit(3, f'prepare_data: {exc}\n')
    except (ValueError, TypeError) as exc:
        parser.exit(2, f'prepare_data: error: {exc}\n')
    except subprocess.CalledProcessError as exc:
        parser.exit(exc.returncode or 1, f'prepare_data: {exc.cmd[2] if len(exc.cmd) > 2 else exc.cmd} '
                                         f'failed with exit status {exc.returncode}\n')
    print(f'prepare_data: wrote {len(written)} item(s) in {time.perf_counter() - start:.1f} s:')
    for path in written:
        print(f'  {path}')


if __name__ == '__main__':
    main()
