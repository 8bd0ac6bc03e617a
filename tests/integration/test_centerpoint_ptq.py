"""integration/centerpoint_ptq.py end to end on the micro CenterPoint config and a 2-scene x 2-frame
synthetic nuScenes-format dataset (one training and one validation frame pair), plus its error paths."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, requires_mmdet3d
from integration import centerpoint_ptq, train_synthetic
from integration.backends.mmdet3d.backend import MMDet3DBackend
from integration.backends.mmdet3d.config import load_config
from integration.data.nuscenes import generate
from integration.driver import options

pytestmark = requires_mmdet3d
MICRO = os.path.join(REPO, "integration", "configs", "centerpoint_pillar_micro_synthetic.py")
ALL_MODES = ("fp32", "w8", "w8a8", "w4", "fp8")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic") / "nuscenes")
    generate(root, scenes=["scene-0061", "scene-0103"], frames_per_scene=2, sweeps_per_frame=1, seed=5)
    subprocess.run([sys.executable, os.path.join(REPO, "integration", "prepare_data.py"), "nuscenes",
                    "--framework", "mmdet3d", "--root", root, "--version", "v1.0-mini"],
                   check=True, capture_output=True)
    return root


@pytest.fixture(scope="module")
def micro_state(tmp_path_factory):
    """Random (seeded) weights of the micro model, saved as a plain state_dict."""
    MMDet3DBackend().import_stack()
    torch.manual_seed(0)
    model = MMDet3DBackend().build_model(load_config(MICRO), "cpu")
    path = str(tmp_path_factory.mktemp("ckpt") / "micro.pth")
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def run_driver(*args):
    return centerpoint_ptq.main(["--config", MICRO] + [str(a) for a in args])


def read_results(work_dir):
    with open(os.path.join(work_dir, "results.json")) as f:
        return {row["mode"]: row for row in json.load(f)["results"]}


@pytest.fixture(scope="module")
def all_modes_run(data_root, micro_state, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("run_all"))
    rc = run_driver("--checkpoint", micro_state[0], "--data-root", data_root, "--work-dir", work,
                    "--modes", ",".join(ALL_MODES), "--calib-batches", 2)
    assert rc == 0
    return work


def test_every_mode_gets_a_row_with_metrics_and_timings(all_modes_run):
    rows = read_results(all_modes_run)
    assert list(rows) == list(ALL_MODES)
    for mode, row in rows.items():
        assert 0.0 <= row["mAP"] <= 1.0 and 0.0 <= row["NDS"] <= 1.0
        assert set(row["class_AP"]) == set(load_config(MICRO).class_names)
        assert row["ms_per_frame"] > 0
        assert (row["calib_s"] is None) == (mode == "fp32")
    with open(os.path.join(all_modes_run, "results.md")) as f:
        table = f.read()
    assert all(f"| {mode} |" in table for mode in ALL_MODES)
    saved = sorted(n for n in os.listdir(all_modes_run) if n.startswith("calib_"))
    assert saved == sorted(f"calib_{m}.json" for m in ALL_MODES if m != "fp32")


def test_weight_amax_in_calibration_file_is_per_channel_max_of_checkpoint(all_modes_run, micro_state):
    """w8 weight quantizers are per output channel with max calibration: amax = max |W| over the
    other axes, computed here from the checkpoint itself."""
    state = micro_state[1]
    with open(os.path.join(all_modes_run, "calib_w8.json")) as f:
        quantizers = json.load(f)["quantizers"]
    weights = {name: q for name, q in quantizers.items() if q["role"] == "weight"}
    assert len(weights) >= 80  # every conv / deconv / linear of the micro model
    for name, entry in weights.items():
        layer = name.rsplit(".", 1)[0]
        w = state[layer + ".weight"].float()
        axis = entry["axis"]
        expected = w.abs().transpose(0, axis).reshape(w.shape[axis], -1).amax(dim=1)
        got = torch.tensor(entry["amax"]).reshape(-1)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_reused_calibration_file_reproduces_the_quantized_results(all_modes_run, data_root, micro_state,
                                                                   tmp_path):
    work = str(tmp_path / "reuse")
    assert run_driver("--checkpoint", micro_state[0], "--data-root", data_root, "--work-dir", work,
                      "--modes", "w8a8,fp8", "--calib-file", all_modes_run) == 0
    first, again = read_results(all_modes_run), read_results(work)
    for mode in ("w8a8", "fp8"):
        assert again[mode]["mAP"] == first[mode]["mAP"]
        assert again[mode]["NDS"] == first[mode]["NDS"]
        assert again[mode]["class_AP"] == first[mode]["class_AP"]
        with open(os.path.join(all_modes_run, f"calib_{mode}.json")) as f1, \
                open(os.path.join(work, f"calib_{mode}.json")) as f2:
            amax1 = {k: v["amax"] for k, v in json.load(f1)["quantizers"].items()}
            amax2 = {k: v["amax"] for k, v in json.load(f2)["quantizers"].items()}
        assert amax1 == amax2


def test_options_fold_bn_skip_layers_percentile_sensitivity(data_root, micro_state, tmp_path):
    """Everything but the pillar feature net left float, so sensitivity has one layer to rank."""
    work = str(tmp_path / "opts")
    rc = run_driver("--checkpoint", micro_state[0], "--data-root", data_root, "--work-dir", work,
                    "--modes", "w8a8", "--calib-batches", 1, "--calib-method", "percentile", "--skip-zeros",
                    "--fold-bn", "--skip-layers", "pts_backbone.*", "pts_neck.*", "pts_bbox_head.*",
                    "--sensitivity", "--max-eval-frames", 1)
    assert rc == 0
    with open(os.path.join(work, "calib_w8a8.json")) as f:
        calib = json.load(f)
    assert calib["metadata"]["fold_bn"] is True
    layers = {name.rsplit(".", 1)[0] for name in calib["quantizers"]}
    assert layers == {"pts_voxel_encoder.pfn_layers.0.linear"}
    with open(os.path.join(work, "sensitivity_w8a8_proxy.md")) as f:
        assert "pts_voxel_encoder.pfn_layers.0.linear" in f.read()


# ---- error paths: one line on stderr, exit status 2, nothing in the work dir -------------------------

def expect_error(capsys, tmp_path, *args, match):
    work = tmp_path / "work"
    rc = centerpoint_ptq.main([str(a) for a in args] + ["--work-dir", str(work)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    # library warnings may precede it; the error itself is one line and the last one
    errors = [line for line in err if line.startswith("centerpoint_ptq: error:")]
    assert len(errors) == 1 and err[-1] == errors[0] and match in errors[0], err
    assert not work.exists()
    return errors[0]


def test_missing_checkpoint(capsys, tmp_path, data_root):
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", tmp_path / "nope.pth",
                 "--data-root", data_root, match="--checkpoint")


def test_unreadable_checkpoint(capsys, tmp_path, data_root):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", bad, "--data-root", data_root,
                 match="cannot read")


def test_checkpoint_of_another_model(capsys, tmp_path, data_root, micro_state):
    state = dict(micro_state[1])
    state["extra.weight"] = state.pop("pts_voxel_encoder.pfn_layers.0.linear.weight")
    path = tmp_path / "other.pth"
    torch.save(state, path)
    line = expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", path, "--data-root", data_root,
                        match="does not fit")
    assert "1 missing (pts_voxel_encoder.pfn_layers.0.linear.weight)" in line
    assert "1 unexpected (extra.weight)" in line


def test_checkpoint_with_a_wrong_shape(capsys, tmp_path, data_root, micro_state):
    state = dict(micro_state[1])
    key = "pts_voxel_encoder.pfn_layers.0.linear.weight"
    state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])
    path = tmp_path / "wide.pth"
    torch.save(state, path)
    line = expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", path, "--data-root", data_root,
                        match="does not fit")
    assert "1 shape mismatch" in line and key in line


def test_config_without_metric(capsys, tmp_path, data_root, micro_state):
    cfg = tmp_path / "no_metric.py"
    cfg.write_text(f"_base_ = [{MICRO!r}]\nval_evaluator = None\ntest_evaluator = None\n")
    expect_error(capsys, tmp_path, "--config", cfg, "--checkpoint", micro_state[0], "--data-root", data_root,
                 match="no test_evaluator")


def test_data_root_without_info_files(capsys, tmp_path, micro_state):
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], "--data-root", empty,
                 match="prepare_data.py nuscenes --framework mmdet3d")


@pytest.mark.parametrize("flag,value,match", [
    ("--modes", "fp32,int3", "unknown mode(s) int3"),
    ("--calib-method", "kl", "unknown method 'kl'"),
    ("--calib-batches", "99", "larger than the training split (2 frames)"),
])
def test_bad_option(capsys, tmp_path, data_root, micro_state, flag, value, match):
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], "--data-root", data_root,
                 flag, value, match=match)


def test_openpcdet_source_tree_is_checked(capsys, tmp_path, micro_state):
    expect_error(capsys, tmp_path, "--framework", "openpcdet", "--config", MICRO, "--checkpoint", micro_state[0],
                 "--pcdet-root", tmp_path, match="is not an OpenPCDet source tree")


def test_openpcdet_needs_a_config(capsys, tmp_path, micro_state):
    expect_error(capsys, tmp_path, "--framework", "openpcdet", "--checkpoint", micro_state[0],
                 match="--framework openpcdet needs --config")


def test_calibration_file_of_another_mode(capsys, tmp_path, data_root, micro_state, all_modes_run):
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], "--data-root", data_root,
                 "--modes", "w8a8", "--calib-file", os.path.join(all_modes_run, "calib_w8.json"),
                 match="was calibrated for mode w8, not w8a8")


def test_two_process_run_matches_the_single_process_run(all_modes_run, data_root, micro_state, tmp_path):
    """torchrun with two CPU (gloo) processes: each calibrates on its shard and evaluates its half of
    the val frames; statistics and results are gathered, so amaxes and metrics equal one process's."""
    work = str(tmp_path / "dist")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571",
         os.path.join(REPO, "integration", "centerpoint_ptq.py"), "--config", MICRO, "--checkpoint",
         micro_state[0], "--data-root", data_root, "--work-dir", work, "--modes", "w8a8", "--calib-batches", "2",
         "--launcher", "pytorch"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    single, dist = read_results(all_modes_run)["w8a8"], read_results(work)["w8a8"]
    assert (dist["mAP"], dist["NDS"], dist["class_AP"]) == (single["mAP"], single["NDS"], single["class_AP"])
    with open(os.path.join(all_modes_run, "calib_w8a8.json")) as f1, open(os.path.join(work, "calib_w8a8.json")) as f2:
        assert ({k: v["amax"] for k, v in json.load(f1)["quantizers"].items()}
                == {k: v["amax"] for k, v in json.load(f2)["quantizers"].items()})


def test_distributed_run_needs_a_prepared_data_root(capsys, tmp_path, micro_state):
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], "--launcher", "pytorch",
                 match="--launcher pytorch needs --data-root")


def test_committed_checkpoint_fits_the_tiny_config():
    if not os.path.isfile(options.DEFAULT_CHECKPOINT):
        pytest.skip("the trained checkpoint is not in this checkout (integration/train_synthetic.py makes it)")
    state = torch.load(options.DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    MMDet3DBackend().import_stack()
    model = MMDet3DBackend().build_model(load_config(options.DEFAULT_CONFIG), "cpu")
    assert MMDet3DBackend().load_weights(model, options.DEFAULT_CHECKPOINT) == len(model.state_dict())


def test_train_synthetic_writes_float16_weights_that_load(data_root, tmp_path):
    out = tmp_path / "trained.pth"
    rc = train_synthetic.main(["--config", MICRO, "--data-root", data_root, "--work-dir", str(tmp_path / "work"),
                               "--max-iters", "3", "--save-every", "2", "--output", str(out)])
    assert rc == 0
    logs = "".join(p.read_text() for p in (tmp_path / "work").rglob("*.log"))
    # the periodic write happened after iteration 2 only (3 is not a multiple of 2), then the final one
    assert f"iteration 2: wrote {out}" in logs and "iteration 3: wrote" not in logs
    state = torch.load(out, map_location="cpu", weights_only=True)
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 and torch.isfinite(v).all() for v in floats)
    model = MMDet3DBackend().build_model(load_config(MICRO), "cpu")
    assert MMDet3DBackend().load_weights(model, str(out)) == len(model.state_dict())


@pytest.mark.parametrize("flag", ["--max-iters", "--save-every"])
def test_train_synthetic_refuses_a_non_positive_count(data_root, tmp_path, capsys, flag):
    rc = train_synthetic.main(["--config", MICRO, "--data-root", data_root, "--work-dir", str(tmp_path / "work"),
                               flag, "0", "--output", str(tmp_path / "out.pth")])
    assert rc == 2
    assert f"{flag} must be a positive integer, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.parametrize("extra,match", [
    (("--calib-method", "percentile"), "--calib-method 'max' (this run: 'percentile')"),
    (("--skip-layers", "no_such.*"), "'no_such.*' matches no module"),
])
def test_reused_file_with_other_settings_or_unmatched_skip_pattern(capsys, tmp_path, data_root, micro_state,
                                                                   all_modes_run, extra, match):
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], "--data-root", data_root,
                 "--modes", "w8a8", "--calib-file", all_modes_run, *extra, match=match)


def test_calibration_file_that_is_a_json_list(capsys, tmp_path, data_root, micro_state):
    bad = tmp_path / "calib.json"
    bad.write_text("[1, 2]")
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], "--data-root", data_root,
                 "--modes", "w8", "--calib-file", bad, match="is not a calibration file")


def test_work_dir_in_use_by_another_run(capsys, tmp_path, data_root, micro_state):
    import socket
    from integration.driver.lock import LOCK_NAME
    work = tmp_path / "busy"
    work.mkdir()
    (work / LOCK_NAME).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    rc = centerpoint_ptq.main(["--config", MICRO, "--checkpoint", micro_state[0], "--data-root", data_root,
                               "--work-dir", str(work)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is in use by process" in err[0]
    assert os.listdir(work) == [LOCK_NAME]
