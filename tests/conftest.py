"""Shared test helpers: the repository root and skip markers for the optional stacks.

Test files import them with ``from conftest import ...`` (pytest puts this folder on ``sys.path``). Unit tests of
the package live in ``tests/unit/``; tests of ``integration/`` (driver, backends, data) in ``tests/integration/``.
"""
import importlib.util
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def has_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


requires_mmdet3d = pytest.mark.skipif(
    not (has_module("mmdet3d") and has_module("nuscenes")),
    reason="needs the MMDetection3D stack with nuscenes-devkit (bash scripts/setup_mmdet3d.sh)")
requires_pcdet = pytest.mark.skipif(
    not has_module("pcdet"),
    reason="OpenPCDet (pcdet) is not importable: it is on no package registry; put its source tree on PYTHONPATH "
           "to run these tests")
requires_spconv = pytest.mark.skipif(not has_module("spconv"), reason="spconv is not installed (pip install spconv)")


@pytest.fixture
def one_intra_op_thread():
    """Runs the test on one intra-op thread: spconv 2.3.8's CPU convolution races on more (two identical calls of
    one SubMConv3d differ; see pytorch_quantization/ptq/reconstruct/sparse_grad.py), so tests that compare
    spconv outputs exactly, or ranges calibrated in separate forwards, need one."""
    from pytorch_quantization.utils.threads import intra_op_threads  # pylint: disable=import-outside-toplevel
    with intra_op_threads(1):
        yield
