"""``save_calibration`` / ``load_calibration``: every quantizer's amax in a JSON file with metadata.

Format (``format: pytorch_quantization.ptq.calibration``, ``version: 2``; version 1 files still load)::

    {"format": ..., "version": 2, "package_version": ..., "torch_version": ..., "created_utc": ...,
     "metadata": {...user supplied...},
     "quantizers": {"<dotted name>": {"role": "input" | "weight", "num_bits": 8 | [4, 3], "axis": ...,
                                      "unsigned": false, "narrow_range": true,
                                      "shape": [C, 1, 1, 1], "amax": [...] | null}}}

amax values are float32 written as the exact decimal of their double widening, so a round trip is bit exact.
``null`` means the quantizer had no amax (uncalibrated, disabled or ``quant_act=False``).

Version 2 adds an optional ``"weights": {"file", "sha256", "layers"}`` section naming a side-car file of the
learned integer weights of layers reconstructed by ``ptq.reconstruct`` (see ``weight_payload``).
"""
import datetime
import json

import numpy as np
import torch

from pytorch_quantization.version import __version__
from pytorch_quantization.ptq.atomic_io import atomic_write_text
from pytorch_quantization.ptq.quantizers import find_quantizers, set_amax
from pytorch_quantization.ptq import weight_payload

__all__ = ["save_calibration", "load_calibration", "FORMAT"]

FORMAT = "pytorch_quantization.ptq.calibration"
VERSION = 2
READABLE_VERSIONS = (1, 2)


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
        "shape": None if amax is None else list(amax.shape),
        "amax": None if amax is None else amax.detach().cpu().double().tolist(),
    }


def save_calibration(model, path, metadata=None):
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
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a calibration file (invalid JSON: {err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a calibration file written by save_calibration (format {FORMAT!r})")
    if doc.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{path} has calibration format version {doc.get('version')!r}; this package reads "
                         f"versions {list(READABLE_VERSIONS)}")
    return doc


def _mismatch_message(path, missing, unexpected, different):
    parts = []
    for label, names in (("quantizers in the model but not in the file", missing),
                         ("quantizers in the file but not in the model", unexpected),
                         ("quantizers whose settings or amax shape differ", different)):
        if names:
            shown = ", ".join(names[:8]) + (f" ... (+{len(names) - 8})" if len(names) > 8 else "")
            parts.append(f"{label}: {shown}")
    return (f"calibration file {path} does not fit the model: " + "; ".join(parts) +
            ". Quantize the model with the same config (and skip / overrides) used when the file was written, or "
            "pass strict=False to load only the matching quantizers")


def load_calibration(model, path, *, strict=True):
    """Set amaxes saved by ``save_calibration`` into ``model``'s quantizers and switch quantization on.

    With ``strict`` (default) the file must list exactly the model's quantizers with the same settings and amax
    shapes, else ``ValueError`` names the mismatched quantizers. ``strict=False`` loads the matching ones only.

    Returns:
        the file's ``metadata`` dict.
    """
    doc = _read(path)
    saved = doc.get("quantizers", {})
    refs = {ref.name: ref for ref in find_quantizers(model)}
    if not refs:
        raise ValueError("model has no quantizers; run quantize_model with the config used for calibration first")
    missing = [n for n in refs if n not in saved]
    unexpected = [n for n in saved if n not in refs]
    different = []
    for name in refs.keys() & saved.keys():
        entry, now = saved[name], _entry(refs[name])
        settings_differ = any(entry.get(k) != now[k] for k in ("role", "num_bits", "axis", "unsigned", "narrow_range"))
        amax = entry.get("amax")
        shape_bad = amax is not None and list(np.shape(amax)) != entry.get("shape")
        if settings_differ or shape_bad:
            different.append(name)
    if strict and (missing or unexpected or different):
        raise ValueError(_mismatch_message(path, missing, unexpected, sorted(different)))
    for name, ref in refs.items():
        if name in saved and name not in different and saved[name]["amax"] is not None:
            param = next(ref.layer.parameters(), None)
            set_amax(ref.quantizer, torch.tensor(saved[name]["amax"], dtype=torch.float32),
                     device=None if param is None else param.device)
            ref.quantizer.disable_calib()
            ref.quantizer.enable_quant()
    _load_learned_weights(refs, path, doc, strict)
    return doc.get("metadata", {})


# ---- learned weights (version 2): kept apart from the amax code above ------------------------------------------
def _save_learned_weights(refs, path, doc):
    """Write the side-car of learned integer weights (before the JSON that names it); returns the JSON text with
    its section added, or None when no layer has learned weights."""
    section = weight_payload.save_weights(refs, path)
    if section is None:
        return None
    doc["weights"] = section
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def _load_learned_weights(refs, path, doc, strict):
    weight_payload.load_weights(list(refs.values()), doc.get("weights"), path, strict=strict)
