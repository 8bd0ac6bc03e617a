"""Calibration files of the driver: which file each mode reuses, what a file records, and when it may be reused.

A file written by the driver stores, besides the amaxes, the settings that produced them (``metadata``). When a
file is reused (``--calib-file``) its settings must equal this run's, else the run stops with a one-line error
naming the differing options: the results (and any file written from the reused amaxes) then never claim
settings that did not produce them. A file that is not a calibration file (not UTF-8 JSON, not an object, amax
values that are not numbers) is refused with a one-line error before any work.
"""
import json
import math
import os

from integration.driver.errors import DriverError
from integration.driver.options import preset_of

__all__ = ["CALIB_SETTINGS", "calib_file_name", "calib_file_for", "plan_files", "run_settings", "check_file",
           "check_settings"]

#: options whose values a calibration depends on (besides the model); checked when a file is reused
CALIB_SETTINGS = ("calib_method", "percentile", "skip_zeros", "seed", "fold_bn", "skip_layers", "reconstruct",
                  "reconstruct_iters", "task_loss", "bits_budget")
#: settings added with reconstruction: a driver file written before them was made with these values
_LATER_DEFAULTS = {"reconstruct": None, "reconstruct_iters": 100, "task_loss": False, "bits_budget": None}
_OPTION = {"calib_method": "--calib-method", "percentile": "--percentile", "skip_zeros": "--skip-zeros",
           "seed": "--seed", "fold_bn": "--fold-bn", "skip_layers": "--skip-layers", "reconstruct": "--reconstruct",
           "reconstruct_iters": "--reconstruct-iters", "task_loss": "--task-loss", "bits_budget": "--bits-budget"}


def calib_file_name(mode):
    return f"calib_{mode}.json"


def calib_file_for(calib_file, mode):
    """The calibration file to reuse for ``mode`` (``calib_file`` may be a file or a work dir), or None."""
    if calib_file is None:
        return None
    if os.path.isdir(calib_file):
        path = os.path.join(calib_file, calib_file_name(mode))
        if not os.path.isfile(path):
            raise DriverError(f"--calib-file: {calib_file} has no {calib_file_name(mode)} for mode {mode}")
        return path
    return calib_file


def plan_files(args):
    """``{mode: file to reuse or None}`` for every quantized mode of the run (a runtime mode such as ``w8a8-ort``
    reuses its preset's file)."""
    return {m: calib_file_for(args.calib_file, preset_of(m)) for m in args.modes if m != "fp32"}


def run_settings(args):
    """This run's values of ``CALIB_SETTINGS``, as stored in a calibration file."""
    return {"calib_method": args.calib_method, "percentile": args.percentile, "skip_zeros": args.skip_zeros,
            "seed": args.seed, "fold_bn": args.fold_bn, "skip_layers": list(args.skip_layers),
            "reconstruct": args.reconstruct, "reconstruct_iters": args.reconstruct_iters, "task_loss": args.task_loss,
            "bits_budget": args.bits_budget}


def _amax_ok(amax):
    if amax is None:
        return True
    if isinstance(amax, list):
        return all(_amax_ok(a) for a in amax)
    return isinstance(amax, (int, float)) and not isinstance(amax, bool) and math.isfinite(amax)


def check_file(path):
    """The parsed document of calibration file ``path``; one-line ``DriverError`` when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except UnicodeDecodeError:
        raise DriverError(f"--calib-file: {path} is not a text file; give a calib_<mode>.json written by "
                          f"this driver or ptq.save_calibration") from None
    except json.JSONDecodeError as err:
        raise DriverError(f"--calib-file: {path} is not valid JSON ({err.msg} at line {err.lineno}); give a "
                          f"calib_<mode>.json written by this driver or ptq.save_calibration") from None
    except OSError as err:
        raise DriverError(f"--calib-file: cannot read {path}: {err.strerror}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("quantizers"), dict):
        raise DriverError(f"--calib-file: {path} is not a calibration file (expected a JSON object with a "
                          f"'quantizers' object, got {type(doc).__name__}); give a file written by this driver "
                          f"or ptq.save_calibration")
    for name, entry in doc["quantizers"].items():
        if not isinstance(entry, dict) or not _amax_ok(entry.get("amax")):
            raise DriverError(f"--calib-file: {path}: quantizer {name} has an invalid amax "
                              f"({json.dumps(entry.get('amax') if isinstance(entry, dict) else entry)[:40]}); "
                              f"amax must be a finite number, a nested list of them, or null")
    if not isinstance(doc.get("metadata", {}), dict):
        raise DriverError(f"--calib-file: {path}: 'metadata' must be a JSON object")
    return doc


def check_settings(path, mode, metadata, args):
    """``metadata`` (of the file reused for ``mode``) must record this run's settings; error naming each
    option that differs. Files without driver metadata (written by ptq.save_calibration alone) are accepted
    when their metadata has none of the settings."""
    if metadata.get("mode", mode) != mode:
        raise DriverError(f"--calib-file: {path} was calibrated for mode {metadata['mode']}, not {mode}")
    ours = run_settings(args)
    if "calib_method" in metadata:  # a driver file: settings it predates had their defaults
        metadata = dict(_LATER_DEFAULTS, **metadata)
    differ = [f"{_OPTION[k]} {metadata[k]!r} (this run: {ours[k]!r})" for k in CALIB_SETTINGS
              if k in metadata and metadata[k] != ours[k]]
    if differ:
        raise DriverError(f"--calib-file: {path} was calibrated with " + ", ".join(differ)
                          + "; rerun with the file's settings or calibrate again without --calib-file")
