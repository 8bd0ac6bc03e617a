"""The OpenPCDet backend against a real OpenPCDet source tree (CPU, no compiled ops): config loading,
CenterPoint-pillar build with the .cuda() calls mapped, strict weight loading, calibration forward without
box decoding, quantization + calibration, and a full forward whose CenterHead NMS runs on the CPU fallback.

OpenPCDet is on no package registry, so CI skips this file; put an OpenPCDet checkout on PYTHONPATH
(``pcdet`` importable from source, its CUDA ops need not be built) to run it."""
import importlib.util
import os
import types

import numpy as np
import pytest
import torch

from conftest import requires_pcdet

pytestmark = requires_pcdet

GRID, VOXEL = 64, 0.32
RANGE = [-GRID * VOXEL / 2, -GRID * VOXEL / 2, -2.0, GRID * VOXEL / 2, GRID * VOXEL / 2, 4.0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from integration.backends.openpcdet import backend
    from integration.backends.openpcdet import config as pcdet_config
    from integration.driver import pipeline
    root, fallbacks, served = backend.import_stack()
    cfg = pcdet_config.load_config("tools/cfgs/waymo_models/centerpoint_pillar_1x.yaml", root)
    work = str(tmp_path_factory.mktemp("work"))
    driver_backend = backend.OpenPCDetBackend(root)
    driver_backend.work_dir, driver_backend.logger = work, backend.make_logger(work)
    return types.SimpleNamespace(backend=backend, root=root, fallbacks=fallbacks, served=served, cfg=cfg,
                                 driver_backend=driver_backend, forward=pipeline.forward_fn(driver_backend),
                                 quantize=pipeline.quantize)


def small_dataset(cfg):
    """What build_network reads from a dataset, for a 64 x 64 pillar grid (keeps the test fast)."""
    return types.SimpleNamespace(class_names=cfg.CLASS_NAMES, grid_size=np.array([GRID, GRID, 1]),
                                 point_cloud_range=np.array(RANGE, dtype=np.float32),
                                 voxel_size=[VOXEL, VOXEL, 6.0], depth_downsample_factor=None,
                                 point_feature_encoder=types.SimpleNamespace(num_point_features=5))


def pillar_batch(seed, pillars=300, points=20):
    """A collated OpenPCDet batch (numpy) of random pillars: voxels, their point counts and coordinates."""
    rng = np.random.RandomState(seed)
    flat = rng.choice(GRID * GRID, pillars, replace=False)
    ys, xs = flat // GRID, flat % GRID
    counts = rng.randint(1, points + 1, size=pillars)
    voxels = np.zeros((pillars, points, 5), dtype=np.float32)
    for i in range(pillars):
        n = counts[i]
        voxels[i, :n, 0] = RANGE[0] + (xs[i] + rng.rand(n)) * VOXEL
        voxels[i, :n, 1] = RANGE[1] + (ys[i] + rng.rand(n)) * VOXEL
        voxels[i, :n, 2] = rng.uniform(-1.5, 2.0, n)
        voxels[i, :n, 3:] = rng.rand(n, 2)
    coords = np.stack([np.zeros(pillars), np.zeros(pillars), ys, xs], axis=1).astype(np.int32)
    return {"voxels": voxels, "voxel_num_points": counts.astype(np.int32), "voxel_coords": coords,
            "batch_size": 1, "frame_id": np.array(["f"])}


def build(stack):
    torch.manual_seed(0)
    return stack.backend.build_model(stack.cfg, small_dataset(stack.cfg), "cpu")


def test_import_needs_no_compiled_op(stack):
    assert "pcdet.ops.iou3d_nms.iou3d_nms_cuda" in stack.served or importlib.util.find_spec(
        "pcdet.ops.iou3d_nms.iou3d_nms_cuda") is not None
    assert "iou3d_nms_utils.nms_gpu (CPU tensors)" in stack.fallbacks
    assert os.path.isdir(os.path.join(stack.root, "tools"))
    assert stack.cfg.MODEL.NAME == "CenterPoint" and stack.cfg.DATA_CONFIG.DATASET == "WaymoDataset"


def test_weights_load_strictly(stack, tmp_path):
    from integration.driver.errors import DriverError
    model = build(stack)
    state = model.state_dict()
    full = tmp_path / "full.pth"
    torch.save({"model_state": state}, full)
    assert stack.driver_backend.load_weights(build(stack), str(full)) == len(state)
    partial = tmp_path / "partial.pth"
    torch.save({"model_state": {k: v for k, v in state.items() if "dense_head" not in k}}, partial)
    with pytest.raises(DriverError, match="not loaded"):
        stack.driver_backend.load_weights(build(stack), str(partial))


def test_calibration_forward_stops_before_decoding(stack):
    model = build(stack)
    with torch.no_grad():
        out = stack.forward(model, pillar_batch(0))
    assert isinstance(out, list) and len(out) == len(stack.cfg.MODEL.DENSE_HEAD.CLASS_NAMES_EACH_HEAD)
    assert out[0]["hm"].shape[-2:] == (GRID, GRID)


def test_quantized_pillar_centerpoint_detects_through_cpu_nms(stack):
    from integration.backends.openpcdet.compat.bev_nms import rotated_bev_iou
    from integration.backends.openpcdet.compat.device import cuda_calls_to
    from pcdet.models import load_data_to_gpu
    from pytorch_quantization import ptq
    model = build(stack)
    layers, _ = stack.quantize(model, "w8a8")
    swapped = set(layers.swapped)
    assert "vfe.pfn_layers.0.linear" in swapped and "vfe.pfn_layers.1.linear" in swapped
    assert "backbone_2d.deblocks.0.0" in swapped and "dense_head.shared_conv.0" in swapped
    convs = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert set(convs) <= swapped
    ptq.calibrate(model, [pillar_batch(1), pillar_batch(2)], forward_fn=stack.forward)
    batch = pillar_batch(3)
    with cuda_calls_to("cpu"), torch.no_grad():
        load_data_to_gpu(batch)
        preds, _ = model(batch)
    boxes = preds[0]["pred_boxes"]
    nms = stack.cfg.MODEL.DENSE_HEAD.POST_PROCESSING.NMS_CONFIG
    assert boxes.shape[1] == 7 and 0 < boxes.shape[0] <= nms.NMS_POST_MAXSIZE
    iou = rotated_bev_iou(boxes, boxes) - torch.eye(len(boxes))
    assert float(iou.max()) <= nms.NMS_THRESH + 1e-5  # no two kept boxes overlap more than the threshold


def voxel_batch(seed, voxels=400, points=5):
    """Random voxels of a 64 x 64 x 40 grid (0.1 m x 0.1 m x 0.15 m, z in [-2, 4]) for MeanVFE."""
    rng = np.random.RandomState(seed)
    flat = rng.choice(64 * 64 * 40, voxels, replace=False)
    zs, ys, xs = flat // (64 * 64), (flat // 64) % 64, flat % 64
    counts = rng.randint(1, points + 1, size=voxels)
    data = np.zeros((voxels, points, 5), dtype=np.float32)
    for i in range(voxels):
        n = counts[i]
        data[i, :n, 0] = -3.2 + (xs[i] + rng.rand(n)) * 0.1
        data[i, :n, 1] = -3.2 + (ys[i] + rng.rand(n)) * 0.1
        data[i, :n, 2] = -2.0 + (zs[i] + rng.rand(n)) * 0.15
        data[i, :n, 3:] = rng.rand(n, 2)
    coords = np.stack([np.zeros(voxels), zs, ys, xs], axis=1).astype(np.int32)
    return {"voxels": data, "voxel_num_points": counts.astype(np.int32), "voxel_coords": coords,
            "batch_size": 1, "frame_id": np.array(["f"])}


def test_voxel_centerpoint_quantizes_every_sparse_layer_and_residual_add(stack):
    from integration.backends.openpcdet import config as pcdet_config
    from integration.backends.openpcdet.compat.device import cuda_calls_to
    from pytorch_quantization.ptq.plugins.spconv import bias_after_sparse_conv
    from pcdet.models import load_data_to_gpu
    from pytorch_quantization import ptq
    cfg = pcdet_config.load_config("cfgs/waymo_models/centerpoint.yaml", stack.root)
    cfg.MODEL.DENSE_HEAD.POST_PROCESSING.MAX_OBJ_PER_SAMPLE = 40  # the 8 x 8 BEV map has 64 cells
    dataset = types.SimpleNamespace(class_names=cfg.CLASS_NAMES, grid_size=np.array([64, 64, 40]),
                                    point_cloud_range=np.array([-3.2, -3.2, -2.0, 3.2, 3.2, 4.0], dtype=np.float32),
                                    voxel_size=[0.1, 0.1, 0.15], depth_downsample_factor=None,
                                    point_feature_encoder=types.SimpleNamespace(num_point_features=5))
    torch.manual_seed(0)
    model = stack.backend.build_model(cfg, dataset, "cpu")
    float_model = __import__("copy").deepcopy(model)
    layers, adds = stack.quantize(model, "w8a8")
    sparse = [n for n, m in float_model.named_modules() if ptq.layer_types.is_sparse_conv(m)]
    assert sparse and set(sparse) <= set(layers.swapped)
    blocks = [n for n, m in float_model.named_modules() if type(m).__name__ == "SparseBasicBlock"]
    assert len(blocks) == 8 and adds.column("block") == blocks
    assert adds.column("status") == ["residual add quantized"] * 8
    ptq.calibrate(model, [voxel_batch(1)], forward_fn=stack.forward)
    batch = voxel_batch(2)
    with cuda_calls_to("cpu"), torch.no_grad():
        load_data_to_gpu(batch)
        reference = stack.forward(float_model, dict(batch))  # float, biases handled
        quantized = stack.forward(model, dict(batch))
        with bias_after_sparse_conv(model):
            preds, _ = model(batch)
    assert ptq.sqnr_db(reference, quantized) > 10.0
    assert preds[0]["pred_boxes"].shape[1] == 7
