"""``save_calibration`` / ``load_calibration``: every quantizer's amax in a JSON file with metadata.

Format (``format: pytorch_quantization.ptq.calibration``, ``version: 2``; version 1 files still load)::

    {"format": ..., "version": 2, "package_version": ..., "torch_version": ..., "created_utc": ...,
     "metadata": {...user supplied...},
     "quantizers": {"<dotted name>": {"role": "input" | "weight", "num_bits": 8 | [4, 3], "axis": ...,
                                      "unsigned": false, "narrow_range": true, "quant_act": true,
                                      "shape": [C, 1, 1, 1], "amax": [...] | null}}}

amax values are float32 written as the exact decimal of their double widening, so a round trip is bit exact.
``null`` means the quantizer had no amax (uncalibrated, disabled or ``quant_act=False``). ``quant_act`` is the
layer's switch (``nn.QuantActMixin``), restored on load so a weight-only calibration reloads as weight-only
(files without it leave the layer's switch as it is).

``load_calibration`` checks the whole file before it changes anything: a file that is not valid JSON / UTF-8, a
malformed entry, an amax that is not a finite number >= 0 (or a nested list of them), an amax whose shape
disagrees with its ``shape`` field, with the quantizer's axis or with the layer's weight -- each is a
``ValueError`` naming the file and the quantizer, and the model stays as it was. So a loaded amax never needs
checking again in the forward pass.

Version 2 adds an optional ``"weights": {"file", "sha256", "layers"}`` section naming a side-car file of the
learned integer weights of layers reconstructed by ``ptq.reconstruct`` (see ``weight_payload``); it is checked
with the rest of the file before anything changes.
"""
import datetime
import json
import math
import os
from typing import Optional, Union

import numpy as np
import torch

from pytorch_quantization.version import __version__
from pytorch_quantization.ptq.atomic_io import atomic_write_text
from pytorch_quantization.ptq.quantizers import amax_shape, find_quantizers, set_amax
from pytorch_quantization.ptq import weight_payload

__all__ = ["save_calibration", "load_calibration", "FORMAT"]

FORMAT = "pytorch_quantization.ptq.calibration"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_SETTINGS = ("role", "num_bits", "axis", "unsigned", "narrow_range")
_SHOWN = 8


def _entry(ref):
    q = ref.quantizer
    amax = q.amax
    num_bits = list(q.num_bits) if isinstance(q.num_bits, tuple) else q.num_bits
    return {
        "role": ref.role,
        "num_bits": num_bits,
        "axis": list(q.axis) if isinstance(q.axis, tuple) else q.axis,
        "unsigned": bool(q.unsigned),
        "narrow_range": bool(q.narrow_range),
        "quant_act": bool(getattr(ref.layer, "quant_act", True)),
        "shape": None if amax is None else list(amax.shape),
        "amax": None if amax is None else amax.detach().cpu().double().tolist(),
    }


def save_calibration(model: torch.nn.Module, path: Union[str, os.PathLike], metadata: Optional[dict] = None) -> None:
    """Write every quantizer's amax (and its settings) to ``path`` as JSON, atomically.

    ``metadata``: optional JSON-serialisable dict stored with the file (e.g. calibration method, data, commit).
    """
    refs = find_quantizers(model)
    if not refs:
        raise ValueError("model has no quantizers; run quantize_model and calibrate before save_calibration")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "package_version": __version__,
        "torch_version": torch.__version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metadata": metadata or {},
        "quantizers": {ref.name: _entry(ref) for ref in refs},
    }
    try:
        text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON serialisable (finite numbers, strings, lists, dicts): {err}") from None
    text = _save_learned_weights(refs, path, doc) or text
    atomic_write_text(path, text)


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a calibration file (not UTF-8 JSON: {err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a calibration file written by save_calibration (format {FORMAT!r})")
    if doc.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{path} has calibration format version {doc.get('version')!r}; this package reads "
                         f"versions {list(READABLE_VERSIONS)}")
    if not isinstance(doc.get("quantizers"), dict):
        raise ValueError(f"calibration file {path}: 'quantizers' must be a mapping of quantizer name -> entry, got "
                         f"{type(doc.get('quantizers')).__name__}; the file is damaged, write it again with "
                         "save_calibration")
    if not isinstance(doc.get("metadata", {}), dict):
        raise ValueError(f"calibration file {path}: 'metadata' must be a mapping, got "
                         f"{type(doc['metadata']).__name__}")
    return doc


def _is_numbers(value):
    if isinstance(value, list):
        return all(_is_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _amax_problem(value, shape):
    """What is wrong with a saved amax (a number or nested lists of numbers, finite, >= 0, of ``shape``), or None."""
    if not _is_numbers(value):
        return f"amax must be a number or a (nested) list of numbers, got {json.dumps(value)[:60]}"
    try:
        array = np.array(value, dtype=np.float64)
    except ValueError:
        return "amax is a ragged list; it must be rectangular"
    if array.size == 0:
        return "amax is empty"
    bad = array[~np.isfinite(array) | (array < 0)]
    if bad.size:
        return f"amax must be finite and >= 0, got {float(bad[0])} ({bad.size} such values)"
    if list(array.shape) != shape:
        return f"amax has shape {list(array.shape)} but the entry says shape {shape}"
    return None


def _invalid(entry):
    """What makes a file entry unusable whatever the model (a damaged or hand-edited file), or None."""
    if not isinstance(entry, dict):
        return f"entry must be a mapping, got {type(entry).__name__}"
    if "quant_act" in entry and not isinstance(entry["quant_act"], bool):
        return f"quant_act must be true or false, got {entry['quant_act']!r}"
    return None if entry.get("amax") is None else _amax_problem(entry["amax"], entry.get("shape"))


def _misfit(entry, ref, now):
    """Why a valid file entry does not fit the model's quantizer ``ref`` (``now``: its current entry), or None."""
    differ = [k for k in _SETTINGS if entry.get(k) != now[k]]
    if differ:
        return ", ".join(f"{k} {entry.get(k)!r} in the file vs {now[k]!r} in the model" for k in differ)
    if entry.get("amax") is None:
        return None
    shape, axis = entry["shape"], ref.quantizer.axis
    if axis is None and math.prod(shape) != 1:
        return f"per-tensor quantizer but the file has {math.prod(shape)} amax values"
    if axis is not None and ref.role == "weight":
        weight_shape = list(ref.layer.weight.shape)
        expected = amax_shape(weight_shape, axis)
        if shape != expected:
            return (f"weight amax of shape {shape} does not fit the weight of layer {ref.layer_name!r}, of shape "
                    f"{weight_shape} along axis {axis} (expected {expected})")
    return None


def _shown(items, sep):
    return sep.join(items[:_SHOWN]) + (f"{sep}... (+{len(items) - _SHOWN})" if len(items) > _SHOWN else "")


def _mismatch_message(path, missing, unexpected, misfits):
    parts = [f"{label}: {_shown(names, ', ')}" for label, names in (
        ("quantizers in the model but not in the file", missing),
        ("quantizers in the file but not in the model", unexpected),
        ("quantizers whose settings or amax shape differ", list(misfits))) if names]
    if misfits:
        parts[-1] += f" ({_shown([f'{n}: {why}' for n, why in misfits.items()], '; ')})"
    return (f"calibration file {path} does not fit the model: " + "; ".join(parts) +
            ". Quantize the model with the same config (and skip / overrides) used when the file was written, or "
            "pass strict=False to load only the matching quantizers")


def load_calibration(model: torch.nn.Module, path: Union[str, os.PathLike], *, strict: bool = True) -> dict:
    """Set amaxes saved by ``save_calibration`` into ``model``'s quantizers and switch quantization on.

    The whole file is checked first (see the module docstring); on any error nothing in the model changes.
    With ``strict`` (default) the file must list exactly the model's quantizers with the same settings and amax
    shapes that fit them, else ``ValueError`` names the mismatched quantizers. ``strict=False`` loads the matching
    ones only (a damaged entry is an error either way).

    Returns:
        the file's ``metadata`` dict.
    """
    doc = _read(path)
    saved = doc["quantizers"]
    refs = {ref.name: ref for ref in find_quantizers(model)}
    if not refs:
        raise ValueError("model has no quantizers; run quantize_model with the config used for calibration first")
    invalid = [f"{name}: {problem}" for name, problem in ((n, _invalid(e)) for n, e in saved.items()) if problem]
    if invalid:
        raise ValueError(f"calibration file {path} has invalid entries: {_shown(invalid, '; ')}. The file is damaged "
                         "or was edited; write it again with save_calibration")
    missing = [n for n in refs if n not in saved]
    unexpected = [n for n in saved if n not in refs]
    misfits = {n: _misfit(saved[n], refs[n], _entry(refs[n])) for n in refs if n in saved}
    different = {n: why for n, why in misfits.items() if why is not None}
    if strict and (missing or unexpected or different):
        raise ValueError(_mismatch_message(path, missing, unexpected, different))
    learned = weight_payload.read_weights(list(refs.values()), doc.get("weights"), path, strict=strict)
    for name, why in misfits.items():
        if why is None:
            _apply(refs[name], saved[name])
    weight_payload.apply_weights(learned)
    return doc.get("metadata", {})


def _apply(ref, entry):
    if "quant_act" in entry and hasattr(ref.layer, "quant_act"):
        ref.layer.quant_act = entry["quant_act"]
    if entry.get("amax") is None:
        return
    param = next(ref.layer.parameters(), None)
    set_amax(ref.quantizer, torch.tensor(entry["amax"], dtype=torch.float32),
             device=None if param is None else param.device)
    ref.quantizer.disable_calib()
    ref.quantizer.enable_quant()


# ---- learned weights (version 2): kept apart from the amax code above ------------------------------------------
def _save_learned_weights(refs, path, doc):
    """Write the side-car of learned integer weights (before the JSON that names it); returns the JSON text with
    its section added, or None when no layer has learned weights."""
    section = weight_payload.save_weights(refs, path)
    if section is None:
        return None
    doc["weights"] = section
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"
