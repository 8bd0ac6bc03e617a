"""CenterPoint post-training quantization driver (command line).

    python integration/centerpoint_ptq.py                       # synthetic data, committed checkpoint
    python integration/centerpoint_ptq.py --framework mmdet3d --config CFG --checkpoint CKPT \\
        --data-root DIR --modes fp32,w8,w8a8 --calib-method percentile --calib-batches 64
    python integration/centerpoint_ptq.py --framework openpcdet --pcdet-root ~/OpenPCDet \\
        --config tools/cfgs/nuscenes_models/cbgs_dyn_pp_centerpoint.yaml --checkpoint CKPT --data-root DIR

For each mode a FRESH copy of the float model is (optionally BN-folded,) quantized with the
pytorch_quantization.ptq preset of that name, calibrated on a seeded subset of the training split
(or loaded from --calib-file) and evaluated on the val split with the config's own metric. One table
(mode, mAP, NDS, per-class AP, ms/frame, calibration seconds) is printed and written to the work dir as
results.md / results.json, beside calib_<mode>.json files. The mode loop is integration/driver/pipeline.py,
the same for both frameworks (integration/backends/). Bad input ends with a one-line error and exit
status 2 before any result is written.

    python integration/centerpoint_ptq.py --study [--calib-methods max,percentile,mse,entropy,auto] [--skip-zeros both]

runs every mode x calibration method from one statistics pass per mode, with 95% paired-bootstrap intervals of
each difference to fp32 (integration/driver/study.py).
"""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, REPO_ROOT)

from integration.driver import options, pipeline, study  # noqa: E402
from integration.driver.errors import DriverError  # noqa: E402


def main(argv=None):
    args = options.build_parser().parse_args(argv)
    try:
        if args.study:
            pipeline.run(args, compare=study.run_study, plan_files=study.plan_files)
        else:
            pipeline.run(args)
    except DriverError as err:
        print(f"centerpoint_ptq: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
