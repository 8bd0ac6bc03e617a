"""``--study`` end to end on the micro config and a 2-scene x 2-frame synthetic dataset: one statistics pass
per mode feeds every method, the amaxes equal a separate calibration run's, every quantized row has its paired
interval, the entropy collapse is named in the notes, the files and plots are written; plus its option checks."""
import json
import os

import pytest

from conftest import requires_mmdet3d
from integration import centerpoint_ptq
from integration.driver import options
from integration.driver.errors import DriverError
from test_centerpoint_ptq import data_root, micro_state, run_driver  # noqa: F401  (fixtures)

METHODS = "max,percentile,entropy,auto"
LABELS = ["fp32", "w8 (weights only)", "w8a8 max", "w8a8 percentile", "w8a8 percentile+skip_zeros", "w8a8 entropy",
          "w8a8 entropy+skip_zeros", "w8a8 auto"]


@pytest.fixture(scope="module")
def study_run(data_root, micro_state, tmp_path_factory):  # noqa: F811
    from pytorch_quantization import ptq
    work = str(tmp_path_factory.mktemp("study"))
    passes = []
    original = ptq.collect_statistics

    def counting(*args, **kwargs):
        passes.append(kwargs.get("skip_zeros"))
        return original(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(ptq, "collect_statistics", counting)
    try:
        rc = run_driver("--checkpoint", micro_state[0], "--data-root", data_root, "--work-dir", work,
                        "--study", "--modes", "w8,w8a8", "--calib-methods", METHODS, "--skip-zeros", "both",
                        "--calib-batches", 2)
    finally:
        mp.undo()
    assert rc == 0
    with open(os.path.join(work, "results.json")) as f:
        doc = json.load(f)
    return work, doc, passes


def amaxes(path):
    with open(path) as f:
        return {k: v["amax"] for k, v in json.load(f)["quantizers"].items()}


@requires_mmdet3d
def test_one_statistics_pass_feeds_every_method(study_run):
    _, doc, passes = study_run
    assert passes == ["both"]  # w8a8 only: w8 has no activation quantizers
    assert [r["label"] for r in doc["results"]] == LABELS


@requires_mmdet3d
def test_every_quantized_row_has_a_paired_interval_and_the_fast_metric_equals_the_devkit(study_run):
    _, doc, _ = study_run
    for row in doc["results"]:
        assert row["fast_mAP"] == pytest.approx(row["mAP"], abs=1e-6)
        assert row["fast_NDS"] == pytest.approx(row["NDS"], abs=1e-6)
        if row["mode"] == "fp32":
            assert row["intervals"] is None
            continue
        for metric in ("mAP", "NDS"):
            iv = row["intervals"][metric]
            assert iv["low"] <= iv["delta"] <= iv["high"]
            assert iv["delta"] == pytest.approx(row[metric] - doc["results"][0][metric], abs=1e-6)
            assert iv["excludes_zero"] == (iv["low"] > 0 or iv["high"] < 0)


@requires_mmdet3d
def test_calibration_files_record_their_method_and_auto_choices(study_run):
    work, doc, _ = study_run
    for row in doc["results"][1:]:
        with open(os.path.join(work, row["calib_file"])) as f:
            calib = json.load(f)
        meta = calib["metadata"]
        assert meta["calib_method"] == (row["method"] or "max")
        assert meta["skip_zeros"] == bool(row["skip_zeros"])
        if row["method"] == "auto":
            inputs = {n for n, q in calib["quantizers"].items() if q["role"] == "input" and q["amax"] is not None}
            assert set(meta["auto_choices"]) == inputs
            for name, choice in meta["auto_choices"].items():
                assert choice["amax"] == pytest.approx(calib["quantizers"][name]["amax"], rel=1e-6)


@requires_mmdet3d
@pytest.mark.parametrize("method,extra,name", [("entropy", (), "calib_w8a8_entropy.json"),
                                               ("percentile", ("--skip-zeros",),
                                                "calib_w8a8_percentile_skipzeros.json")])
def test_study_amaxes_equal_a_separate_calibration(study_run, data_root, micro_state, tmp_path,  # noqa: F811
                                                   method, extra, name):
    work = str(tmp_path / method)
    rc = run_driver("--checkpoint", micro_state[0], "--data-root", data_root, "--work-dir", work, "--modes",
                    "w8a8", "--calib-method", method, "--calib-batches", 2, "--max-eval-frames", 1, *extra)
    assert rc == 0
    assert amaxes(os.path.join(study_run[0], name)) == amaxes(os.path.join(work, "calib_w8a8.json"))


@requires_mmdet3d
def test_entropy_clipping_warning_names_the_pfn_in_the_notes(study_run):
    work, doc, _ = study_run
    with open(os.path.join(work, "results.md")) as f:
        text = f.read()
    lines = [line for line in text.splitlines() if line.startswith("- warning (w8a8 entropy)")]
    assert any("pts_voxel_encoder.pfn_layers.0.linear" in line for line in lines), text
    assert not [w for r in doc["results"] if r["method"] == "max" for w in r["warnings"]]  # max clips nothing


@requires_mmdet3d
def test_table_csv_and_plots_are_written(study_run):
    work, doc, _ = study_run
    with open(os.path.join(work, "results.csv")) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 + len(LABELS) and lines[0].startswith("configuration,mode,method")
    for plot in ("study_map.png", "study_class_ap.png", "study_layers.png"):
        with open(os.path.join(work, plot), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@requires_mmdet3d
def test_study_reuses_fitting_calibration_files(study_run, data_root, micro_state, tmp_path):  # noqa: F811
    work = str(tmp_path / "again")
    rc = run_driver("--checkpoint", micro_state[0], "--data-root", data_root, "--work-dir", work, "--study",
                    "--modes", "w8a8", "--calib-methods", "entropy,auto", "--calib-batches", 2,
                    "--calib-file", study_run[0])
    assert rc == 0
    with open(os.path.join(work, "results.json")) as f:
        rows = {r["label"]: r for r in json.load(f)["results"]}
    first = {r["label"]: r for r in study_run[1]["results"]}
    for label in ("w8a8 entropy", "w8a8 auto"):
        assert rows[label]["reused"] and rows[label]["mAP"] == first[label]["mAP"]


@pytest.mark.parametrize("argv,match", [
    (["--skip-zeros", "both"], "need --study"),
    (["--calib-methods", "max"], "need --study"),
    (["--study", "--calib-methods", "max,kl"], "--calib-methods"),
    (["--study", "--calib-methods", "max,max"], "--calib-methods"),
    (["--skip-zeros", "often"], "--skip-zeros takes no value or 'both'"),
    (["--sensitivity", "fast"], "--sensitivity: unknown kind"),
    (["--study", "--sensitivity"], "not part of --study"),
])
def test_study_option_errors(argv, match):
    args = options.build_parser().parse_args(argv)
    with pytest.raises(DriverError, match=match):
        options.check_study_args(args)


def test_study_options_parse():
    args = options.build_parser().parse_args(["--study", "--skip-zeros", "both"])
    options.check_study_args(args)
    assert args.calib_methods == ["max", "percentile", "mse", "entropy", "auto"] and args.skip_zeros == "both"
    args = options.build_parser().parse_args(["--sensitivity"])
    options.check_study_args(args)
    assert args.sensitivity == "proxy"
    assert centerpoint_ptq.main(["--study", "--launcher", "pytorch", "--data-root", "x"]) == 2


@requires_mmdet3d
def test_normal_run_auto_records_choices_and_sensitivity_both_prints_agreement(data_root, micro_state,  # noqa: F811
                                                                             tmp_path, capsys):
    work = str(tmp_path / "auto")
    rc = run_driver("--checkpoint", micro_state[0], "--data-root", data_root, "--work-dir", work, "--modes",
                    "w8a8", "--calib-method", "auto", "--calib-batches", 2, "--max-eval-frames", 1,
                    "--skip-layers", "pts_backbone.*", "pts_bbox_head.*", "--sensitivity", "both")
    assert rc == 0
    with open(os.path.join(work, "calib_w8a8.json")) as f:
        calib = json.load(f)
    inputs = {n for n, q in calib["quantizers"].items() if q["role"] == "input" and q["amax"] is not None}
    assert calib["metadata"]["calib_method"] == "auto" and set(calib["metadata"]["auto_choices"]) == inputs
    with open(os.path.join(work, "sensitivity_w8a8_proxy.md")) as f:
        proxy = f.read()
    with open(os.path.join(work, "sensitivity_w8a8_full.md")) as f:
        full = f.read()
    layers = {n.rsplit(".", 1)[0] for n in calib["quantizers"]}
    assert len(layers) >= 2 and all(layer in proxy and layer in full for layer in layers)
    assert "proxy vs full ranking agreement over" in full
    assert "w8a8: proxy vs full ranking agreement" in capsys.readouterr().out
