"""Driver checks that need no detection framework: --work-dir, --skip-layers, reused calibration files
(settings and content), the work-dir lock, stale outputs, OpenPCDet bare state_dicts. Each bad input is a
one-line DriverError (exit status 2 from the command line) before anything is written."""
import json
import os
import subprocess
import sys

import pytest
import torch

from integration import centerpoint_ptq
from integration.backends.openpcdet.backend import _model_state_file
from integration.driver import calib_files, options, pipeline
from integration.driver.errors import DriverError
from integration.driver.lock import LOCK_NAME, work_dir_lock


def cli_error(capsys, *args):
    rc = centerpoint_ptq.main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("centerpoint_ptq: error:"), err
    return err[0]


# ---- item 4: --work-dir --------------------------------------------------------------------------------------

def test_work_dir_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("x")
    assert "is a file, not a directory" in cli_error(capsys, "--work-dir", target)
    assert target.read_text() == "x"


def test_work_dir_under_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    line = cli_error(capsys, "--work-dir", tmp_path / "f" / "sub" / "dir")
    assert "lies under the file" in line and str(tmp_path / "f") in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_work_dir_that_cannot_be_created(capsys, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "cannot be created" in cli_error(capsys, "--work-dir", locked / "run")
        assert not (locked / "run").exists()
    finally:
        locked.chmod(0o700)


def test_check_work_dir_accepts_new_and_existing_dirs(tmp_path):
    assert options.check_work_dir(str(tmp_path / "a" / "b")) == str(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()  # checked, not created
    assert options.check_work_dir(str(tmp_path)) == str(tmp_path)


# ---- item 5: --skip-layers -------------------------------------------------------------------------------------

def toy_model():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1)))


def test_skip_pattern_matching_nothing_names_the_pattern_and_modules():
    with pytest.raises(DriverError, match=r"'backbone\.\*' matches no module.*0, 1, 1\.0"):
        pipeline.check_skip_layers(toy_model(), ["0", "backbone.*"])


def test_skip_patterns_that_match_pass():
    pipeline.check_skip_layers(toy_model(), ["1.*", "0"])


# ---- items 6 and 8: reused calibration files --------------------------------------------------------------------

def driver_args(**overrides):
    args = options.build_parser().parse_args([])
    args.modes = ["fp32", "w8a8"]
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def write(path, payload, binary=False):
    if binary:
        path.write_bytes(payload)
    else:
        path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def test_settings_that_produced_the_file_must_match():
    args = driver_args()
    metadata = dict(calib_files.run_settings(args), mode="w8a8")
    calib_files.check_settings("f.json", "w8a8", metadata, args)
    other = dict(metadata, calib_method="percentile", percentile=99.9, seed=3)
    with pytest.raises(DriverError) as err:
        calib_files.check_settings("f.json", "w8a8", other, args)
    line = str(err.value)
    assert "\n" not in line
    assert "--calib-method 'percentile' (this run: 'max')" in line and "--seed 3 (this run: 0)" in line
    assert "--percentile 99.9 (this run: 99.99)" in line
    with pytest.raises(DriverError, match="calibrated for mode w8, not w8a8"):
        calib_files.check_settings("f.json", "w8a8", dict(metadata, mode="w8"), args)


def test_file_without_driver_metadata_is_accepted():
    calib_files.check_settings("f.json", "w8a8", {}, driver_args())


@pytest.mark.parametrize("payload,binary,match", [
    ([1, 2, 3], False, "not a calibration file"),
    ({"quantizers": {"conv._input_quantizer": {"amax": "3.5"}}}, False, "invalid amax"),
    ({"quantizers": {"conv._weight_quantizer": {"amax": [1.0, [2.0, True]]}}}, False, "invalid amax"),
    (b"\x80\x81\x00binary", True, "not a text file"),
    ("{not json", False, "not valid JSON"),
])
def test_malformed_calibration_files_are_one_line_errors(tmp_path, payload, binary, match):
    path = write(tmp_path / "calib.json", payload, binary)
    with pytest.raises(DriverError, match=match) as err:
        calib_files.check_file(path)
    assert "\n" not in str(err.value)


def test_valid_calibration_file_is_returned(tmp_path):
    doc = {"quantizers": {"a": {"amax": [1.0, 2.5]}, "b": {"amax": None}}, "metadata": {"mode": "w8"}}
    assert calib_files.check_file(write(tmp_path / "c.json", doc)) == doc


# ---- item 7: lock and stale outputs -----------------------------------------------------------------------------

def test_second_run_on_a_work_dir_fails_fast(tmp_path):
    with work_dir_lock(str(tmp_path)):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(DriverError, match="is in use by process"):
            with work_dir_lock(str(tmp_path)):
                pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    (tmp_path / LOCK_NAME).write_text(f"{dead.stdout.strip()} {socket.gethostname()}\n")
    with work_dir_lock(str(tmp_path)):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())


def test_failed_run_removes_the_work_dir_it_created(tmp_path):
    work = tmp_path / "new"
    with pytest.raises(DriverError):
        with work_dir_lock(str(work)):
            raise DriverError("bad input")
    assert not work.exists()


def test_stale_outputs_are_removed_but_reused_files_kept(tmp_path):
    for name in ("results.md", "results.json", "results.csv", "study_map.png", "sensitivity_w8.md", "calib_w8.json",
                 "calib_w4.json", "notes.txt"):
        (tmp_path / name).write_text("old")
    pipeline.remove_stale_outputs(str(tmp_path), [str(tmp_path / "calib_w4.json"), None])
    assert sorted(os.listdir(tmp_path)) == ["calib_w4.json", "notes.txt"]


# ---- item 9: OpenPCDet checkpoints ------------------------------------------------------------------------------

def test_bare_state_dict_is_wrapped_for_load_params_from_file(tmp_path):
    state = {"module.vfe.weight": torch.arange(4.0), "backbone.bias": torch.ones(2)}
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    wrapped = _model_state_file(str(bare), str(tmp_path / "scratch"))
    loaded = torch.load(wrapped, weights_only=True)
    assert sorted(loaded) == ["model_state"] and sorted(loaded["model_state"]) == ["backbone.bias", "vfe.weight"]
    assert torch.equal(loaded["model_state"]["vfe.weight"], torch.arange(4.0))


def test_openpcdet_checkpoint_is_used_as_is_and_junk_is_refused(tmp_path):
    own = tmp_path / "own.pth"
    torch.save({"model_state": {"w": torch.ones(1)}, "epoch": 3}, own)
    assert _model_state_file(str(own), str(tmp_path)) == str(own)
    junk = tmp_path / "junk.pth"
    torch.save({"epoch": 3}, junk)
    with pytest.raises(DriverError, match="neither an OpenPCDet checkpoint"):
        _model_state_file(str(junk), str(tmp_path))
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(DriverError, match="cannot read"):
        _model_state_file(str(tmp_path / "text.pth"), str(tmp_path))
