"""Run one of OpenPCDet's ``python -m pcdet....`` entry points on a machine without its compiled ops.

    python -m integration.backends.openpcdet.compat.run_module --pcdet-root DIR pcdet.datasets.nuscenes.nuscenes_dataset \\
        --cfg_file tools/cfgs/dataset_configs/nuscenes_dataset.yaml --func create_nuscenes_infos --version v1.0-mini

Installs the placeholders and CPU fallbacks of ``integration.backends.openpcdet.compat`` and (without CUDA) maps
``.cuda()`` to the CPU, then runs the module as ``__main__`` with the remaining arguments, from the
current directory (OpenPCDet's scripts expect its source tree). With a CUDA device nothing is mapped.
"""
import argparse
import runpy
import sys
import warnings

import torch

from integration.backends.openpcdet import config as pcdet_config
from integration.backends.openpcdet.compat import placeholders
from integration.backends.openpcdet.compat.device import cuda_calls_to
from integration.driver.errors import DriverError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pcdet-root", default=None, help="OpenPCDet source tree (default: the installed pcdet)")
    parser.add_argument("module", help="module to run as __main__, e.g. pcdet.datasets.nuscenes.nuscenes_dataset")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args(argv)
    try:
        pcdet_config.locate_pcdet(args.pcdet_root)
    except DriverError as err:
        print(f"run_module: error: {err}", file=sys.stderr)
        return 2
    placeholders.install()
    from integration.backends.openpcdet.compat.fallbacks import install_cpu_fallbacks
    install_cpu_fallbacks()
    sys.argv = [args.module] + args.args
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with warnings.catch_warnings(), cuda_calls_to(device):
        warnings.filterwarnings("ignore", message=".*found in sys.modules.*", category=RuntimeWarning)
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
