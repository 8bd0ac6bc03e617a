"""Reconstruction on a small voxel (spconv) CenterPoint built with random weights: head output error against fp32.

Model: ``integration/configs/centerpoint_voxel_micro_synthetic.py`` (MMDetection3D's voxel01 CenterPoint cut down:
HardSimpleVFE, SparseEncoder with 17 SubMConv3d and 4 SparseConv3d, SECOND, SECONDFPN, CenterHead), seeded random
weights. Data: LiDAR frames of one synthetic nuScenes scene (``integration.data.nuscenes.generate``); the first
``--calib`` frames calibrate (max) and reconstruct, the next ``--held`` frames are held out.

For each preset (w8a8, w4a8, w4) the table gives the SQNR (dB, all head outputs of all held-out frames pooled) and
the mean squared error of the head outputs against the float model, for round-to-nearest and after each
reconstruction method, and the wall time of the reconstruction.

Usage: python benchmarks/bench_reconstruct_voxel.py [--presets w8a8 w4a8 w4] [--methods brecq adaround]
       [--iters 100] [--calib 8] [--held 4]
"""
import argparse
import copy
import os
import tempfile
import time

import numpy as np
import torch

from pytorch_quantization import ptq
from pytorch_quantization.ptq.forward import flatten_tensors
from pytorch_quantization.ptq.reconstruct import METHODS

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration", "configs",
                      "centerpoint_voxel_micro_synthetic.py")


def build_model(seed=0):
    """The micro voxel CenterPoint with weights drawn under ``seed``, in eval mode on the CPU."""
    from integration.backends.mmdet3d.backend import MMDet3DBackend  # pylint: disable=import-outside-toplevel
    from integration.backends.mmdet3d.config import load_config  # pylint: disable=import-outside-toplevel
    backend = MMDet3DBackend()
    backend.import_stack()
    torch.manual_seed(seed)
    return backend.build_model(load_config(CONFIG), "cpu")


def synthetic_frames(count, seed=3):
    """``count`` model batches (one frame each) from one synthetic nuScenes scene."""
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes  # pylint: disable=import-outside-toplevel
    from integration.data.nuscenes import generate  # pylint: disable=import-outside-toplevel
    batches = []
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "nuscenes")
        generate(root, scenes=["scene-0061"], frames_per_scene=count, sweeps_per_frame=0, seed=seed)
        folder = os.path.join(root, "samples", "LIDAR_TOP")
        for name in sorted(os.listdir(folder)):
            points = np.fromfile(os.path.join(folder, name), dtype=np.float32).reshape(-1, 5).copy()
            points[:, 4] = 0.0  # column 4 is the ring index in the file, the sweep time offset in the model
            batches.append(dict(inputs=dict(points=[torch.from_numpy(points)]),
                                data_samples=[Det3DDataSample(metainfo=dict(box_type_3d=LiDARInstance3DBoxes))]))
    return batches


def head_outputs(model, frames):
    """The CenterHead outputs (per frame: per task, a list with a dict of maps) without box decoding."""
    from integration.backends.mmdet3d.backend import MMDet3DBackend  # pylint: disable=import-outside-toplevel
    with torch.no_grad():
        return [MMDet3DBackend.calibration_forward(model, frame) for frame in frames]


def head_error(reference, outputs):
    """``(SQNR dB, mean squared error)`` of ``outputs`` against ``reference``, every head map pooled."""
    ref, out = flatten_tensors(reference), flatten_tensors(outputs)
    squared = sum(float(((a - b) ** 2).sum()) for a, b in zip(ref, out))
    return ptq.sqnr_db(reference, outputs), squared / sum(a.numel() for a in ref)


def calibrated(base, preset, calib):
    """A quantized copy of ``base`` calibrated (max) on ``calib``."""
    from integration.backends.mmdet3d.backend import MMDet3DBackend  # pylint: disable=import-outside-toplevel
    qmodel = copy.deepcopy(base)
    ptq.quantize_model(qmodel, preset)
    ptq.calibrate(qmodel, calib, forward_fn=MMDet3DBackend.calibration_forward, method="max")
    return qmodel


def reconstructed(base, qmodel, calib, method, iters, **kwargs):
    """``(model, table, seconds)``: a copy of the calibrated ``qmodel`` after ``ptq.reconstruct``."""
    from integration.backends.mmdet3d.backend import MMDet3DBackend  # pylint: disable=import-outside-toplevel
    qmodel = copy.deepcopy(qmodel)
    start = time.perf_counter()
    table = ptq.reconstruct(qmodel, copy.deepcopy(base), calib, forward_fn=MMDet3DBackend.calibration_forward,
                            method=method, iters=iters, progress=False, **kwargs)
    return qmodel, table, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--presets", nargs="+", default=["w8a8", "w4a8", "w4"])
    parser.add_argument("--methods", nargs="+", default=["brecq", "adaround"], choices=list(METHODS))
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--calib", type=int, default=8, help="calibration / reconstruction frames")
    parser.add_argument("--held", type=int, default=4, help="held-out frames the error is measured on")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    if not ptq.HAS_SPCONV:
        raise SystemExit("needs spconv (pip install spconv) for the sparse encoder")
    torch.set_num_threads(1)
    base = build_model(args.seed)
    frames = synthetic_frames(args.calib + args.held)
    calib, held = frames[:args.calib], frames[args.calib:]
    reference = head_outputs(base, held)
    sparse = sum(type(m).__name__ in ("SubMConv3d", "SparseConv3d") for m in base.modules())
    table = ptq.Table(["preset", "method", "sqnr_db", "gain_db", "mse", "mse_vs_rtn", "blocks_learned", "seconds"],
                      title=f"voxel CenterPoint (micro, random weights, {sparse} sparse convs): head outputs vs fp32 "
                            f"on {args.held} held-out frames ({args.calib} calibration frames, {args.iters} iters, "
                            f"1 thread)")
    for preset in args.presets:
        qmodel = calibrated(base, preset, calib)
        rtn_sqnr, rtn_mse = head_error(reference, head_outputs(qmodel, held))
        table.add([preset, "round-to-nearest", rtn_sqnr, 0.0, rtn_mse, 1.0, "", 0.0])
        for method in args.methods:
            learned, blocks, seconds = reconstructed(base, qmodel, calib, method, args.iters,
                                                     learn_act=method != "adaround")
            sqnr, mse = head_error(reference, head_outputs(learned, held))
            done = blocks.column("status").count("learned")
            table.add([preset, method, sqnr, sqnr - rtn_sqnr, mse, mse / rtn_mse, f"{done}/{len(blocks.rows)}",
                       seconds])
    print(table)


if __name__ == "__main__":
    main()
