"""--reconstruct / --reconstruct-iters / --task-loss / --bits-budget of integration/centerpoint_ptq.py on the micro
CenterPoint config (2 iterations: the wiring is tested here, the learning itself in tests/unit)."""
import json
import os

import pytest

from conftest import requires_mmdet3d
from test_centerpoint_ptq import MICRO, expect_error, read_results, run_driver
from test_centerpoint_ptq import data_root, micro_state  # noqa: F401  pylint: disable=unused-import

pytestmark = requires_mmdet3d


@pytest.fixture(scope="module", name="recon_run")
def fixture_recon_run(data_root, micro_state, tmp_path_factory):  # noqa: F811
    work = str(tmp_path_factory.mktemp("recon"))
    rc = run_driver("--checkpoint", micro_state[0], "--data-root", data_root, "--work-dir", work,
                    "--modes", "fp32,w4,w4a8", "--calib-batches", 1, "--reconstruct", "brecq",
                    "--reconstruct-iters", 2, "--task-loss", "--bits-budget", 5)
    assert rc == 0
    return work


def _calib(work, mode):
    with open(os.path.join(work, f"calib_{mode}.json")) as f:
        return json.load(f)


def test_rows_and_files_say_what_was_used(recon_run):
    rows = read_results(recon_run)
    assert rows["fp32"].get("reconstruct") is None
    for mode in ("w4", "w4a8"):
        assert rows[mode]["reconstruct"] == "brecq x2 +task, budget 5 bits"
        assert 0 < rows[mode]["reconstruct_s"] <= rows[mode]["calib_s"]
        doc = _calib(recon_run, mode)
        meta = doc["metadata"]
        assert (meta["reconstruct"], meta["reconstruct_iters"], meta["task_loss"], meta["bits_budget"]) == \
            ("brecq", 2, True, 5.0)
        assert os.path.isfile(os.path.join(recon_run, f"calib_{mode}.weights.pt"))
        # the promoted layers carry 8-bit weights in the file, the others 4; the average stays within the budget
        bits = {name.rsplit(".", 1)[0]: q["num_bits"] for name, q in doc["quantizers"].items()
                if q["role"] == "weight"}
        assert meta["mixed_precision"] and all(bits[layer] == 8 for layer in meta["mixed_precision"])
        assert {b for layer, b in bits.items() if layer not in meta["mixed_precision"]} == {4}
    with open(os.path.join(recon_run, "results.md")) as f:
        assert "| reconstruct |" in f.read().replace("  ", " ")


def test_reused_files_reload_learned_weights_and_reproduce_the_numbers(recon_run, data_root, micro_state,  # noqa: F811
                                                                        tmp_path):
    work = str(tmp_path / "reuse")
    assert run_driver("--checkpoint", micro_state[0], "--data-root", data_root, "--work-dir", work,
                      "--modes", "w4,w4a8", "--calib-file", recon_run, "--reconstruct", "brecq",
                      "--reconstruct-iters", 2, "--task-loss", "--bits-budget", 5) == 0
    first, again = read_results(recon_run), read_results(work)
    for mode in ("w4", "w4a8"):
        assert (again[mode]["mAP"], again[mode]["NDS"], again[mode]["class_AP"]) == \
            (first[mode]["mAP"], first[mode]["NDS"], first[mode]["class_AP"])
        assert again[mode]["reconstruct_s"] is None  # loaded, not learned
        assert _calib(work, mode)["quantizers"] == _calib(recon_run, mode)["quantizers"]


def test_reused_file_needs_the_same_reconstruction(capsys, tmp_path, data_root, micro_state, recon_run):  # noqa: F811
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], "--data-root", data_root,
                 "--modes", "w4", "--calib-file", recon_run, "--bits-budget", 5, match="--reconstruct 'brecq'")


@pytest.mark.parametrize("args, match", [
    (["--modes", "fp32", "--reconstruct", "adaround"], "need a quantized mode"),
    (["--modes", "w4", "--reconstruct", "gptq"], "--reconstruct: unknown method 'gptq'"),
    (["--modes", "w4", "--reconstruct", "adaround", "--reconstruct-iters", 0], "--reconstruct-iters must be"),
    (["--modes", "w4", "--task-loss"], "--task-loss is a loss of --reconstruct"),
    (["--modes", "w4", "--bits-budget", -1], "--bits-budget must be a positive"),
    (["--modes", "w4", "--reconstruct", "qdrop", "--study"], "drop --study / --launcher"),
])
def test_bad_reconstruction_options(capsys, tmp_path, micro_state, args, match):  # noqa: F811
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], *args, match=match)


def test_budget_below_the_mode_bits_is_a_one_line_error(capsys, tmp_path, data_root, micro_state):  # noqa: F811
    expect_error(capsys, tmp_path, "--config", MICRO, "--checkpoint", micro_state[0], "--data-root", data_root,
                 "--modes", "w8", "--calib-batches", 1, "--bits-budget", 4, match="--bits-budget: mode w8: budget 4")


def test_file_written_before_the_reconstruction_options_counts_as_made_without_them():
    """A driver file from before these options has none of their keys: it fits a plain run only."""
    from integration.driver import calib_files, options
    from integration.driver.errors import DriverError
    plain = options.build_parser().parse_args([])
    old = {k: v for k, v in calib_files.run_settings(plain).items()
           if k not in ("reconstruct", "reconstruct_iters", "task_loss", "bits_budget")}
    calib_files.check_settings("f.json", "w4", dict(old, mode="w4"), plain)
    learned = options.build_parser().parse_args(["--reconstruct", "adaround", "--bits-budget", "5"])
    with pytest.raises(DriverError) as err:
        calib_files.check_settings("f.json", "w4", dict(old, mode="w4"), learned)
    assert "--reconstruct None (this run: 'adaround')" in str(err.value)
    assert "--bits-budget None (this run: 5.0)" in str(err.value)


@pytest.mark.parametrize("method, learn_act", [("adaround", False), ("brecq", True), ("qdrop", True)])
def test_block_methods_learn_activation_step_sizes(monkeypatch, method, learn_act):
    """BRECQ / QDrop learn the step sizes of the activation quantizers inside each block (as both papers do);
    AdaRound, one layer at a time, learns the weight rounding only."""
    import torch
    from pytorch_quantization import ptq
    from integration.driver import options, reconstruction
    model, seen = torch.nn.Sequential(torch.nn.Linear(4, 4)), {}
    float_model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    ptq.quantize_model(model, "w4a8")

    def fake_reconstruct(*_args, **kwargs):
        seen.update(kwargs)
        return ptq.Table(["status"], title="reconstruct")
    monkeypatch.setattr(ptq, "reconstruct", fake_reconstruct)
    args = options.build_parser().parse_args(["--modes", "w4a8", "--reconstruct", method])
    reconstruction.apply(model, float_model, "w4a8", args, [torch.ones(1, 4)], None, None, None)
    assert seen["method"] == method and seen["learn_act"] is learn_act
