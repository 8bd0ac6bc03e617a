"""Command line: ``python -m integration.data.waymo --out DIR --segments N --frames F``."""
import argparse
import sys

from .generate import generate
from .protos import WaymoEnvironmentError
from .rig import TOP_COLUMNS, TOP_ROWS


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m integration.data.waymo', description=__doc__)
    parser.add_argument('--out', required=True, help='dataset root to create (must be empty unless --overwrite)')
    parser.add_argument('--segments', type=int, default=4, help='number of segments, >= 2 (default 4)')
    parser.add_argument('--frames', type=int, default=5, help='frames per segment (default 5)')
    parser.add_argument('--val-segments', type=int, default=None,
                        help='segments in the validation split (default: a quarter, at least 1)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--columns', type=int, default=TOP_COLUMNS,
                        help=f'TOP range image width (default {TOP_COLUMNS}, as real data)')
    parser.add_argument('--rows', type=int, default=TOP_ROWS, help=f'TOP beams (default {TOP_ROWS})')
    parser.add_argument('--overwrite', action='store_true', help='replace a non-empty --out')
    args = parser.parse_args(argv)
    try:
        manifest = generate(args.out, args.segments, args.frames, args.val_segments, args.seed, args.columns,
                            args.rows, overwrite=args.overwrite)
    except (ValueError, FileExistsError, WaymoEnvironmentError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(f'[waymo] wrote {args.out}: {manifest["counts"]["training"]["frames"]} training and '
          f'{manifest["counts"]["validation"]["frames"]} validation frames, {manifest["gt_objects"]} gt objects')
    return 0


if __name__ == '__main__':
    sys.exit(main())
