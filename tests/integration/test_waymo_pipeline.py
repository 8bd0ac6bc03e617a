"""Waymo through the one pipeline with MMDetection3D: the synthetic set (2 segments x 2 frames, a coarse
16 x 240 TOP range image) converted by MMDetection3D's own converter, the micro Waymo config end to end
(``centerpoint_ptq.py --dataset waymo``), ``WaymoOpMetric`` on ground truth given back as predictions, and
the one-line errors of ``prepare_data.py waymo`` and the driver. Skips without the mmdet3d stack, the
converter's TensorFlow or the metrics environment (``bash scripts/setup_waymo.sh``)."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, has_module, requires_mmdet3d
from integration import centerpoint_ptq
from integration.data.waymo.metric import TABLE_COLUMNS, metrics_python
from integration.data.waymo.protos import WaymoEnvironmentError

MICRO = os.path.join(REPO, "integration", "configs", "centerpoint_pillar_waymo_micro.py")
PREPARE = os.path.join(REPO, "integration", "prepare_data.py")


def _metrics_env_missing():
    try:
        metrics_python()
    except WaymoEnvironmentError as exc:
        return str(exc)
    return None


pytestmark = [
    requires_mmdet3d,
    pytest.mark.skipif(not (has_module("tensorflow") and has_module("waymo_open_dataset")),
                       reason="the Waymo converter needs TensorFlow: run `bash scripts/setup_waymo.sh`"),
    pytest.mark.skipif(_metrics_env_missing() is not None, reason=str(_metrics_env_missing())),
]


def generate_small(root, seed=5):
    from integration.data.waymo.generate import generate
    generate(root, 2, 2, seed=seed, columns=240, rows=16, log=lambda *_: None)


def prepare(root, framework="mmdet3d", *extra):
    return subprocess.run([sys.executable, PREPARE, "waymo", "--framework", framework, "--root", str(root)]
                          + list(extra), capture_output=True, text=True)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("waymo") / "data")
    generate_small(root)
    proc = prepare(root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory):
    from integration.backends.mmdet3d.backend import MMDet3DBackend
    backend = MMDet3DBackend()
    backend.import_stack()
    torch.manual_seed(0)
    model = backend.build_model(backend.load_config(MICRO, None, None), "cpu")
    path = str(tmp_path_factory.mktemp("ckpt") / "micro.pth")
    torch.save(model.state_dict(), path)
    return path


def run_driver(*args):
    return centerpoint_ptq.main(["--dataset", "waymo", "--config", MICRO] + [str(a) for a in args])


def test_converter_output_matches_the_segments(data_root):
    """MMDetection3D's converter saw every frame: 2 training + 2 validation infos, points of 6 floats."""
    kitti = os.path.join(data_root, "kitti_format")
    for split in ("train", "val"):
        with open(os.path.join(kitti, f"waymo_infos_{split}.pkl"), "rb") as f:
            infos = pickle.load(f)["data_list"]
        assert len(infos) == 2
        points = np.fromfile(os.path.join(kitti, "training", "velodyne", infos[0]["lidar_points"]["lidar_path"]),
                             dtype=np.float32)
        assert points.size > 0 and points.size % 6 == 0


def test_driver_end_to_end(data_root, micro_checkpoint, tmp_path, capsys):
    work = tmp_path / "run"
    assert run_driver("--checkpoint", micro_checkpoint, "--data-root", data_root, "--work-dir", work,
                      "--modes", "fp32,w8", "--calib-batches", 2) == 0
    payload = json.loads((work / "results.json").read_text())
    assert payload["run"]["columns"] == TABLE_COLUMNS and payload["run"]["dataset"] == "waymo"
    rows = {row["mode"]: row for row in payload["results"]}
    assert set(rows) == {"fp32", "w8"}
    for row in rows.values():
        assert all(0.0 <= row[c] <= 1.0 for c in TABLE_COLUMNS)
        # the overall columns are the means over Vehicle, Pedestrian, Cyclist, as WaymoMetric defines them
        assert row["L2 mAPH"] == pytest.approx(np.mean([row[f"{t} L2 mAPH"] for t in ("Vehicle", "Pedestrian",
                                                                                       "Cyclist")]))
    assert rows["w8"]["calib_s"] is not None and rows["fp32"]["calib_s"] is None
    assert (work / "calib_w8.json").is_file()
    header = (work / "results.md").read_text().splitlines()[2]
    assert "Pedestrian L1 mAP" in header and "ms/frame" in header


def test_metric_scores_ground_truth_as_one(data_root):
    """Val ground truth from the info files, fed through WaymoMetric's formatting (Prediction2Waymo: bottom
    centre -> box centre) into WaymoOpMetric, matches gt.bin exactly: every Vehicle/Pedestrian/Cyclist AP is 1."""
    from mmdet3d.structures import LiDARInstance3DBoxes
    from mmdet3d.utils import register_all_modules
    from integration.backends.mmdet3d.waymo_metric import WaymoOpMetric
    register_all_modules()
    classes = ["Car", "Pedestrian", "Cyclist"]
    with open(os.path.join(data_root, "kitti_format", "waymo_infos_val.pkl"), "rb") as f:
        infos = pickle.load(f)["data_list"]
    metric = WaymoOpMetric(os.path.join(data_root, "waymo_format", "gt.bin"))
    metric.dataset_meta = dict(classes=classes)
    samples = []
    for info in infos:
        boxes = [i["bbox_3d"] for i in info["instances"]]
        labels = [i["bbox_label_3d"] for i in info["instances"]]
        samples.append(dict(pred_instances_3d=dict(
            bboxes_3d=LiDARInstance3DBoxes(torch.tensor(boxes, dtype=torch.float32)),
            scores_3d=torch.full((len(boxes),), 0.9), labels_3d=torch.tensor(labels)),
            sample_idx=info["sample_idx"], context_name=info["context_name"], timestamp=info["timestamp"]))
    metric.process({}, samples)
    result = metric.compute_metrics(metric.results)
    for kind in ("Vehicle", "Pedestrian", "Cyclist", "Overall"):
        for level in ("L1", "L2"):
            assert result[f"{kind}/{level} mAPH"] == pytest.approx(1.0, abs=1e-4), (kind, level, result)


def test_ground_truth_of_frames_keeps_only_those_frames(data_root, tmp_path):
    from waymo_open_dataset.protos import metrics_pb2
    from integration.backends.mmdet3d.waymo_metric import ground_truth_of_frames
    gt_path = os.path.join(data_root, "waymo_format", "gt.bin")
    objects = metrics_pb2.Objects()
    objects.ParseFromString(open(gt_path, "rb").read())
    frames = sorted({(o.context_name, o.frame_timestamp_micros) for o in objects.objects})
    expected = sum((o.context_name, o.frame_timestamp_micros) == frames[0] for o in objects.objects)
    assert 0 < expected < len(objects.objects)
    assert ground_truth_of_frames(gt_path, {frames[0]}, str(tmp_path / "gt.bin")) == expected


def test_zero_velocity_pads_seven_value_boxes():
    from mmdet3d.structures import LiDARInstance3DBoxes
    from integration.backends.mmdet3d.waymo_transforms import ZeroVelocity
    boxes = LiDARInstance3DBoxes(torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.3]]))
    out = ZeroVelocity()(dict(gt_bboxes_3d=boxes))["gt_bboxes_3d"]
    assert out.tensor.shape == (1, 9) and torch.equal(out.tensor[:, :7], boxes.tensor)
    assert torch.equal(out.tensor[:, 7:], torch.zeros(1, 2)) and torch.equal(out.gravity_center,
                                                                            boxes.gravity_center)


# ----- bad input: one line, exit 2, nothing written -----

def test_driver_missing_gt_bin(data_root, micro_checkpoint, tmp_path, capsys):
    root = tmp_path / "nogt"
    root.mkdir()
    os.symlink(os.path.join(data_root, "kitti_format"), root / "kitti_format")
    assert run_driver("--checkpoint", micro_checkpoint, "--data-root", root, "--work-dir", tmp_path / "w") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gt.bin" in err[0]
    assert not (tmp_path / "w" / "results.json").exists()


def test_driver_missing_metrics_environment(data_root, micro_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WAYMO_METRICS_PYTHON", str(tmp_path / "nowhere" / "python"))
    assert run_driver("--checkpoint", micro_checkpoint, "--data-root", data_root, "--work-dir", tmp_path / "w") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scripts/setup_waymo.sh" in err[0]


def test_driver_root_converted_for_openpcdet(micro_checkpoint, tmp_path, capsys):
    (tmp_path / "pcdet" / "waymo_processed_data_v0_5_0").mkdir(parents=True)
    assert run_driver("--checkpoint", micro_checkpoint, "--data-root", tmp_path / "pcdet",
                      "--work-dir", tmp_path / "w") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "converted for OpenPCDet" in err[0] and "prepare_data.py waymo" in err[0]


def test_prepare_refuses_a_truncated_tfrecord(tmp_path):
    root = tmp_path / "data"
    generate_small(str(root), seed=9)
    victim = sorted((root / "waymo_format" / "validation").glob("*.tfrecord"))[0]
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) - 100)
    proc = prepare(root)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "truncated" in proc.stderr and victim.name in proc.stderr
    assert not (root / "kitti_format").exists() and not list(root.glob(".prepare_data-*"))


def test_prepare_refuses_a_root_without_tfrecords(tmp_path):
    (tmp_path / "waymo_format" / "training").mkdir(parents=True)
    proc = prepare(tmp_path)
    assert proc.returncode == 2 and "no training tfrecords" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_prepare_refuses_an_openpcdet_root_for_mmdet3d(tmp_path):
    (tmp_path / "waymo_processed_data_v0_5_0").mkdir()
    proc = prepare(tmp_path)
    assert proc.returncode == 2 and "converted for openpcdet" in proc.stderr


def test_synthetic_set_of_an_older_generator_is_refused(data_root, tmp_path):
    from integration.data.prepare_waymo import ensure_synthetic_waymo
    from integration.data.waymo.generate import GENERATOR_VERSION, MANIFEST
    with open(os.path.join(data_root, MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest["generator_version"] == GENERATOR_VERSION
    ensure_synthetic_waymo(data_root, log=lambda *_: None)  # current and converted: nothing to do, no error
    old = tmp_path / "old"
    old.mkdir()
    del manifest["generator_version"]  # as written before versions were recorded
    (old / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"older synthetic Waymo set \\(generator version 1, this version makes "
                                         f"{GENERATOR_VERSION}\\); remove .*old to regenerate"):
        ensure_synthetic_waymo(str(old), log=lambda *_: None)
    assert sorted(p.name for p in old.iterdir()) == [MANIFEST]


def test_committed_checkpoint_fits_the_synthetic_config():
    from integration.backends.mmdet3d.backend import MMDet3DBackend
    from integration.driver import options
    path, config = options.WAYMO_DEFAULTS["checkpoint"], options.WAYMO_DEFAULTS["config"]
    if not os.path.isfile(path):
        pytest.skip("the trained Waymo checkpoint is not in this checkout (integration/train_synthetic.py makes it)")
    backend = MMDet3DBackend()
    backend.import_stack()
    model = backend.build_model(backend.load_config(config, None, None), "cpu")
    assert backend.load_weights(model, path) == len(model.state_dict())


def test_train_synthetic_waymo_steps_through_center_head(data_root, tmp_path):
    """Two training iterations of the micro config: ZeroVelocity gives CenterHead the boxes it trains on."""
    from integration import train_synthetic
    out = tmp_path / "trained.pth"
    assert train_synthetic.main(["--dataset", "waymo", "--config", MICRO, "--data-root", data_root,
                                 "--work-dir", str(tmp_path / "work"), "--max-iters", "2", "--output", str(out)]) == 0
    state = torch.load(out, map_location="cpu", weights_only=True)
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 and torch.isfinite(v).all() for v in floats)
