"""quantize_model on MMDetection3D's own CenterPoint configs (pillar02 and voxel01 for nuScenes),
built with random weights on CPU, and the w8 output error of a real-sized pillar02 on one frame."""
import collections
import os

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet3d", reason="needs the MMDetection3D stack (bash scripts/setup_mmdet3d.sh)")

from pytorch_quantization import ptq  # noqa: E402
from integration.backends.mmdet3d.backend import MMDet3DBackend  # noqa: E402
from integration.backends.mmdet3d.config import load_config  # noqa: E402

import mmdet3d  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(mmdet3d.__file__), ".mim", "configs", "centerpoint")
PILLAR02 = os.path.join(CONFIGS, "centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py")
VOXEL01 = os.path.join(CONFIGS, "centerpoint_voxel01_second_secfpn_8xb4-cyclic-20e_nus-3d.py")


def build(path):
    MMDet3DBackend().import_stack()
    torch.manual_seed(0)
    return MMDet3DBackend().build_model(load_config(path), "cpu")


def swapped_types(summary):
    return collections.Counter(row[1] for row in summary.rows if row[2] == "quantized")


def count_instances(model, cls, exclude=()):
    return sum(isinstance(m, cls) and not isinstance(m, exclude) for m in model.modules())


def test_pillar02_every_dense_layer_is_quantized():
    model = build(PILLAR02)
    # independent expectation: the layer census of the float model (also in ENVIRONMENT.md: 91 / 1 / 1)
    convs = count_instances(model, torch.nn.Conv2d)
    deconvs = count_instances(model, torch.nn.ConvTranspose2d)
    linears = count_instances(model, torch.nn.Linear)
    assert (convs, deconvs, linears) == (91, 1, 1)
    summary = ptq.quantize_model(model, "w8a8")
    assert swapped_types(summary) == {"Conv2d": 91, "ConvTranspose2d": 1, "Linear": 1}
    # nothing with a quantizable weight stayed float
    assert count_instances(model, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear),
                           exclude=tuple(ptq.QUANT_CLASSES.values())) == 0


def test_voxel01_sparse_and_dense_layers_are_quantized():
    spconv = pytest.importorskip("spconv.pytorch", reason="sparse convolutions need spconv (pip install spconv)")
    model = build(VOXEL01)
    expected = {
        "SubMConv3d": count_instances(model, spconv.SubMConv3d),
        "SparseConv3d": count_instances(model, spconv.SparseConv3d),
        "Conv2d": count_instances(model, torch.nn.Conv2d),
        "ConvTranspose2d": count_instances(model, torch.nn.ConvTranspose2d),
    }
    assert expected["SubMConv3d"] == 17 and expected["SparseConv3d"] == 4  # ENVIRONMENT.md census
    summary = ptq.quantize_model(model, "w8a8")
    assert swapped_types(summary) == {k: v for k, v in expected.items() if v}


@pytest.fixture(scope="module")
def synthetic_frame(tmp_path_factory):
    from integration.data.nuscenes import generate
    root = tmp_path_factory.mktemp("frame") / "nuscenes"
    generate(str(root), scenes=["scene-0061"], frames_per_scene=1, sweeps_per_frame=0, seed=11)
    folder = root / "samples" / "LIDAR_TOP"
    (name,) = os.listdir(folder)
    points = np.fromfile(folder / name, dtype=np.float32).reshape(-1, 5)
    points[:, 4] = 0.0  # column 4 is the ring index in the file, the sweep time offset in the model
    return torch.from_numpy(points)


def test_pillar02_w8_outputs_close_to_fp32(synthetic_frame):
    """8-bit symmetric per-channel weight rounding adds noise of variance step^2/12 per weight, with
    step = max|w_c| / 127. For the default (uniform) init E[w^2] = max|w|^2 / 3, so one layer's output
    SQNR is 10 log10(4 * 127^2) = 48 dB; heavier-tailed weights lose a few dB. Errors of the ~21
    layers on the deepest path (PFN, 3 SECOND stages, FPN, shared and separate head convs) add in
    power: 48 - 10 log10(21) = 35 dB (measured here: 35.6 dB for the worst head output). 25 dB leaves
    room for heavier-tailed weights, while a grid 4 bits coarser (6 dB per bit: ~11 dB) fails it."""
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    model = build(PILLAR02)
    batch = dict(inputs=dict(points=[synthetic_frame]),
                 data_samples=[Det3DDataSample(metainfo=dict(box_type_3d=LiDARInstance3DBoxes))])
    with torch.no_grad():
        reference = MMDet3DBackend.calibration_forward(model, batch)
    ptq.quantize_model(model, "w8")
    ptq.calibrate(model, [batch], forward_fn=MMDet3DBackend.calibration_forward)
    with torch.no_grad():
        quantized = MMDet3DBackend.calibration_forward(model, batch)
    assert len(reference) == 6  # CenterHead: per task, a one-element list with a dict of outputs
    for task_ref, task_q in zip(reference, quantized):
        for key in task_ref[0]:
            assert ptq.sqnr_db(task_ref[0][key], task_q[0][key]) > 25.0, key


def test_config_given_by_name_resolves_to_the_shipped_file():
    from integration.driver.options import resolve_mmdet3d_config
    assert os.path.samefile(resolve_mmdet3d_config(os.path.basename(PILLAR02)), PILLAR02)
    assert resolve_mmdet3d_config("no_such_config.py") == "no_such_config.py"
