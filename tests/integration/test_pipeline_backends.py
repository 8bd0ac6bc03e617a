"""The driver's per-mode features (integration.driver.pipeline) through BOTH backends: calibration with the
metadata that produced it, residual adds wherever the model has SparseBasicBlocks, BN folding traced through the
backend's forward, --skip-layers, and reuse of a saved calibration file (same amaxes; other settings refused).

MMDetection3D: the micro CenterPoint-pillar config on a generated 2-scene dataset. OpenPCDet: the voxel
CenterPoint of its Waymo config (spconv backbone with 8 SparseBasicBlocks) on random voxels; it skips without
an importable pcdet (no package registry has it)."""
import copy
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from conftest import REPO, requires_mmdet3d, requires_pcdet
from integration.driver import calib_files, options, pipeline
from integration.driver.errors import DriverError
from pytorch_quantization import ptq

MICRO = os.path.join(REPO, "integration", "configs", "centerpoint_pillar_micro_synthetic.py")


def mmdet3d_case(tmp_path_factory):
    from integration.backends.mmdet3d.backend import MMDet3DBackend
    from integration.data.nuscenes import generate
    root = str(tmp_path_factory.mktemp("synthetic") / "nuscenes")
    generate(root, scenes=["scene-0061", "scene-0103"], frames_per_scene=2, sweeps_per_frame=1, seed=5)
    subprocess.run([sys.executable, os.path.join(REPO, "integration", "prepare_data.py"), "nuscenes",
                    "--framework", "mmdet3d", "--root", root, "--version", "v1.0-mini"], check=True,
                   capture_output=True)
    backend = MMDet3DBackend()
    backend.import_stack()
    cfg = backend.load_config(MICRO, root, str(tmp_path_factory.mktemp("work")))
    backend.check_data(cfg)
    torch.manual_seed(0)
    model = backend.build_model(cfg, "cpu")
    batches = list(backend.calibration_loader(cfg, 2, 0, False))
    return backend, model, batches, MICRO


def openpcdet_case(tmp_path_factory):
    from integration.backends.openpcdet import backend as pcdet_backend
    from integration.backends.openpcdet import config as pcdet_config
    from test_openpcdet_pcdet import voxel_batch  # pylint: disable=import-outside-toplevel
    backend = pcdet_backend.OpenPCDetBackend()
    backend.import_stack()
    path = "cfgs/waymo_models/centerpoint.yaml"
    cfg = pcdet_config.load_config(path, backend.pcdet_root)
    cfg.MODEL.DENSE_HEAD.POST_PROCESSING.MAX_OBJ_PER_SAMPLE = 40
    dataset = types.SimpleNamespace(class_names=cfg.CLASS_NAMES, grid_size=np.array([64, 64, 40]),
                                    point_cloud_range=np.array([-3.2, -3.2, -2.0, 3.2, 3.2, 4.0], dtype=np.float32),
                                    voxel_size=[0.1, 0.1, 0.15], depth_downsample_factor=None,
                                    point_feature_encoder=types.SimpleNamespace(num_point_features=5))
    torch.manual_seed(0)
    model = pcdet_backend.build_model(cfg, dataset, "cpu")
    return backend, model, [voxel_batch(1), voxel_batch(2)], path


@pytest.fixture(scope="module", params=[pytest.param("mmdet3d", marks=requires_mmdet3d),
                                        pytest.param("openpcdet", marks=requires_pcdet)])
def case(request, tmp_path_factory):
    build = mmdet3d_case if request.param == "mmdet3d" else openpcdet_case
    backend, model, batches, config = build(tmp_path_factory)
    return types.SimpleNamespace(name=request.param, backend=backend, model=model, batches=batches, config=config)


def driver_args(case, **overrides):
    args = options.build_parser().parse_args(["--framework", case.name])
    args.config, args.modes = case.config, ["w8a8"]
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def amaxes(model):
    return {ref.name: ref.quantizer.amax.clone() for ref in ptq.find_quantizers(model)
            if ref.quantizer.amax is not None}


def test_calibration_records_its_settings_and_quantizes_residual_adds(case):
    args = driver_args(case, seed=4, calib_method="percentile", percentile=99.9)
    model, seconds, metadata = pipeline.quantize_and_calibrate(case.model, "w8a8", args, None, case.batches,
                                                               case.batches[0], case.backend)
    assert seconds > 0 and amaxes(model)
    config = os.path.abspath(case.config) if os.path.isfile(case.config) else case.config
    assert metadata == dict(calib_files.run_settings(args), mode="w8a8", config=config, framework=case.name)
    blocks = [n for n, m in case.model.named_modules() if type(m).__name__ == "SparseBasicBlock"]
    adds = [n for n, m in model.named_modules() if isinstance(m, ptq.QuantAdd)]
    assert adds == [f"{b}.residual_add" for b in blocks]
    assert (len(blocks) == 8) == (case.name == "openpcdet")


def test_saved_calibration_is_reused_only_with_the_same_settings(case, tmp_path):
    args = driver_args(case)
    model, _, metadata = pipeline.quantize_and_calibrate(case.model, "w8a8", args, None, case.batches,
                                                         case.batches[0], case.backend)
    path = str(tmp_path / "calib_w8a8.json")
    ptq.save_calibration(model, path, metadata=metadata)
    reused, _, reused_metadata = pipeline.quantize_and_calibrate(case.model, "w8a8", args, path, None,
                                                                 case.batches[0], case.backend)
    assert reused_metadata == metadata
    want, got = amaxes(model), amaxes(reused)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    with pytest.raises(DriverError, match=r"--seed 0 \(this run: 1\)"):
        pipeline.quantize_and_calibrate(case.model, "w8a8", driver_args(case, seed=1), path, None,
                                        case.batches[0], case.backend)


def test_fold_bn_and_skip_layers_go_through_the_backend_forward(case):
    convs = [n for n, m in case.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    skip = [convs[-1]]
    pipeline.check_skip_layers(case.model, skip)
    with pytest.raises(DriverError, match="matches no module"):
        pipeline.check_skip_layers(case.model, ["no_such_module.*"])
    args = driver_args(case, fold_bn=True, skip_layers=skip)
    model, _, _ = pipeline.quantize_and_calibrate(case.model, "w8a8", args, None, case.batches, case.batches[0],
                                                  case.backend)
    def batchnorms(m):
        return sum(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())

    assert batchnorms(model) < batchnorms(case.model)  # the trace found producer -> BN pairs and folded them
    assert type(model.get_submodule(convs[-1])) is torch.nn.Conv2d  # left float
    assert isinstance(model.get_submodule(convs[0]), torch.nn.Conv2d)
    reference = pipeline.forward_fn(case.backend)(copy.deepcopy(case.model), case.batches[1])
    quantized = pipeline.forward_fn(case.backend)(model, case.batches[1])
    assert ptq.sqnr_db(reference, quantized) > 10.0
