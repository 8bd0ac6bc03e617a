"""The w8a8-ort mode and --export-onnx of integration/centerpoint_ptq.py on the micro CenterPoint config: the
detector whose dense part runs in onnxruntime against the fake-quantized one, the driver end to end, the exported
files, and the memory columns of the results."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import requires_mmdet3d
from test_centerpoint_ptq import MICRO, read_results, run_driver  # the micro config and its helpers
from test_centerpoint_ptq import data_root, micro_state  # noqa: F401  pylint: disable=unused-import
from integration.backends.mmdet3d.backend import MMDet3DBackend
from integration.driver.pipeline import forward_fn, quantize

pytestmark = requires_mmdet3d
pytest.importorskip("onnxruntime", reason="the w8a8-ort mode runs onnxruntime")
onnx = pytest.importorskip("onnx", reason="the export is checked with onnx.checker")


def test_onnxruntime_detector_matches_the_fake_quantized_one(data_root, micro_state):  # noqa: F811
    from pytorch_quantization import ptq
    from integration.backends.mmdet3d import dense_export
    from integration.driver.onnx_runtime import OrtGraph
    backend = MMDet3DBackend()
    cfg = backend.load_config(MICRO, data_root, None)
    model = backend.build_model(cfg, "cpu")
    model.load_state_dict(micro_state[1])
    quantize(model, "w8a8")
    loader = backend.calibration_loader(cfg, 2, 0, False)
    ptq.calibrate(model, loader, forward_fn=forward_fn(backend))
    batch = next(iter(loader))
    graphs, keys = dense_export.export_graphs(model, batch, forward_fn(backend))
    assert [g.name for g in graphs] == ["voxel_encoder", "dense"]
    ort_model = dense_export.onnxruntime_detector(model, {g.name: OrtGraph(g, 1) for g in graphs}, keys)
    with torch.no_grad():
        want = backend.calibration_forward(model, batch)
        got = backend.calibration_forward(ort_model, batch)
    assert len(got) == len(want) == len(keys)
    for task_got, task_want, task_keys in zip(got, want, keys):
        assert list(task_got[0]) == list(task_want[0]) == task_keys
        for key in task_keys:
            a, b = task_got[0][key].numpy(), task_want[0][key].numpy()
            # one-step flips of intermediate activations (rounding x / scale vs x * (127 / amax), int32 vs float
            # accumulation) move the outputs a little, never structurally
            assert np.abs(a - b).max() <= 0.02 * np.abs(b).max() + 1e-4, key
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999, key


@pytest.fixture(scope="module", name="ort_run")
def fixture_ort_run(data_root, micro_state, tmp_path_factory):  # noqa: F811
    work, exported = tmp_path_factory.mktemp("ort_run"), tmp_path_factory.mktemp("onnx")
    rc = run_driver("--checkpoint", micro_state[0], "--data-root", data_root, "--work-dir", work,
                    "--modes", "fp32,w8a8,w8a8-ort", "--calib-batches", 2, "--export-onnx", exported)
    assert rc == 0
    return str(work), str(exported)


def test_w8a8_ort_row_reuses_the_w8a8_calibration_and_runs_int8_kernels(ort_run):
    work, _ = ort_run
    rows = read_results(work)
    assert list(rows) == ["fp32", "w8a8", "w8a8-ort"]
    ort, fake = rows["w8a8-ort"], rows["w8a8"]
    assert abs(ort["mAP"] - fake["mAP"]) <= 0.005 and ort["ms_per_frame"] > 0
    assert ort["calib_s"] is None  # the w8a8 model itself, not a second calibration
    assert sorted(n for n in os.listdir(work) if n.startswith("calib_")) == ["calib_w8a8.json"]
    assert ort["int8_kernels"]["QLinearConv"] >= 10 and ort["int8_kernels"]["MatMulIntegerToFloat"] == 1
    assert set(ort["dense_ms"]) == {"fp32 torch", "fp32 onnxruntime", "INT8 onnxruntime"}


def test_memory_columns(ort_run):
    work, _ = ort_run
    rows = read_results(work)
    assert rows["fp32"]["calib_peak_mib"] is None and rows["w8a8-ort"]["calib_peak_mib"] is None
    assert rows["w8a8"]["calib_peak_mib"] > 50
    assert all(r["eval_peak_mib"] > 50 and r["memory"] == "rss" for r in rows.values())
    with open(os.path.join(work, "results.md")) as f:
        header = next(line for line in f if line.startswith("| mode |"))
    assert "calib peak RSS MiB" in header and "eval peak RSS MiB" in header


def test_export_onnx_writes_checked_graphs_and_their_io(ort_run):
    _, exported = ort_run
    assert sorted(os.listdir(exported)) == ["fp32", "w8a8"]  # w8a8-ort shares w8a8's graphs
    for mode in ("fp32", "w8a8"):
        with open(os.path.join(exported, mode, "io.json")) as f:
            doc = json.load(f)
        assert doc["mode"] == mode and set(doc["graphs"]) == {"voxel_encoder", "dense"}
        voxels = doc["graphs"]["voxel_encoder"]["inputs"][0]
        assert voxels["name"] == "voxels" and voxels["shape"][0] == "pillars"
        bev = doc["graphs"]["dense"]["inputs"][0]
        assert bev["name"] == "bev" and bev["shape"] == [1, 16, 128, 128]  # micro: PFN 16, 128 x 128 grid
        outputs = [o["name"] for o in doc["graphs"]["dense"]["outputs"]]
        assert outputs == [f"task{t}_{k}" for t, task in enumerate(doc["head_outputs"]) for k in task]
        for graph in doc["graphs"].values():
            path = os.path.join(exported, mode, graph["file"])
            onnx.checker.check_model(path, full_check=True)
            ops = {n.op_type for n in onnx.load(path).graph.node}
            assert ("QuantizeLinear" in ops) == (mode == "w8a8")


def test_onnx_options_are_checked_before_any_work(capsys, tmp_path, data_root, micro_state):  # noqa: F811
    from test_centerpoint_ptq import expect_error
    expect_error(capsys, tmp_path, "--framework", "openpcdet", "--config", "x.yaml", "--checkpoint",
                 micro_state[0], "--modes", "w8a8-ort", match="--framework mmdet3d only")
    afile = tmp_path / "afile"
    afile.write_text("")
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], "--data-root", data_root,
                 "--export-onnx", afile, match="--export-onnx: ")
    line = expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], "--data-root",
                        data_root, "--modes", "w8a8-trt", match="unknown mode(s) w8a8-trt")
    assert "w8a8-ort" in line
