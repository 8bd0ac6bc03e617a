"""Integer weights of layers whose rounding was learned (``ptq.reconstruct``), and their side-car file.

A reconstructed layer keeps its calibrated weight amax; its learned integers ``q`` are stored by writing
``q / scale`` (``scale = bound / amax``, computed exactly as the fake-quant kernels do) into the weight, so
fake quantization of the new weight reproduces ``q`` bit for bit. Such layers are marked
(``weight_quantizer.learned_rounding = "<method>"``, a plain attribute, not part of the state_dict).

``save_calibration`` writes the integers of marked layers to a side-car file beside the JSON
(``<name>.weights.pt``, written atomically before the JSON that names it, with its sha256 in the JSON);
``load_calibration`` writes them back as ``q / scale`` with the loaded amax.
"""
import hashlib
import io
import os

import torch

from pytorch_quantization import _reference
from pytorch_quantization.ptq.atomic_io import atomic_write

__all__ = ["MARK", "weight_grid", "integer_weight", "write_integer_weight", "sidecar_path", "save_weights", "read_weights",
           "apply_weights"]

#: attribute set on a weight quantizer whose rounding was learned (value: the method name)
MARK = "learned_rounding"
_FORMAT = "pytorch_quantization.ptq.weights"


def weight_grid(quantizer, weight):
    """``(scale, lo, hi)`` of an integer weight quantizer, ``scale`` broadcastable to ``weight`` in the kernels'
    compute dtype (0 where amax is below ``AMAX_EPSILON``, where every weight quantizes to 0)."""
    if isinstance(quantizer.num_bits, tuple):
        raise ValueError("learned rounding needs an integer weight quantizer, not E4M3 (num_bits=(4, 3))")
    amax = quantizer.amax
    if amax is None:
        raise ValueError("the weight quantizer has no amax; calibrate the model before reconstruct")
    if weight.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"learned rounding needs float32 / float64 weights, got {weight.dtype}")
    lo, hi = _reference.integer_range(quantizer.num_bits, quantizer.unsigned, quantizer.narrow_range)
    cdt = _reference.compute_dtype(weight.dtype)
    scale, _ = _reference._scale(amax.to(weight.device), quantizer.num_bits,  # pylint: disable=protected-access
                                 quantizer.unsigned, cdt)
    if scale.dim() not in (0, weight.dim()):
        raise ValueError(f"weight amax of shape {tuple(amax.shape)} does not broadcast to the weight "
                         f"{tuple(weight.shape)}; calibrate the weights with ptq.calibrate")
    return scale, lo, hi


def integer_weight(quantizer, weight):
    """The integers the quantizer maps ``weight`` to (round to nearest, as its forward does)."""
    scale, lo, hi = weight_grid(quantizer, weight)
    return torch.clamp(torch.round(weight.detach().to(scale.dtype) * scale), lo, hi)


def write_integer_weight(layer, quantizer, q):
    """Set ``layer.weight`` to ``q / scale`` (0 where the scale is 0) so that the quantizer reproduces ``q``."""
    scale, lo, hi = weight_grid(quantizer, layer.weight)
    q = q.to(device=scale.device, dtype=scale.dtype)
    if q.shape != layer.weight.shape:
        raise ValueError(f"integer weight shape {tuple(q.shape)} differs from the layer's {tuple(layer.weight.shape)}")
    if bool(((q < lo) | (q > hi) | (q != torch.round(q))).any()):
        raise ValueError(f"integer weights must be integers in [{lo:g}, {hi:g}]")
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    value = torch.where(scale == 0, torch.zeros_like(q), q / safe)
    with torch.no_grad():
        layer.weight.copy_(value.to(layer.weight.dtype))


def sidecar_path(json_path):
    """The learned-weights side-car of calibration file ``json_path``."""
    root, _ = os.path.splitext(os.fspath(json_path))
    return root + ".weights.pt"


def save_weights(refs, json_path):
    """Write the integers of marked weight quantizers among ``refs`` beside ``json_path``; returns the JSON
    section (``{"file", "sha256", "layers"}``) or None when no layer is marked."""
    layers = {}
    for ref in refs:
        if ref.role == "weight" and getattr(ref.quantizer, MARK, None) and ref.quantizer.amax is not None:
            q = integer_weight(ref.quantizer, ref.layer.weight)
            dtype = torch.int8 if ref.quantizer.num_bits <= 8 else torch.int32
            layers[ref.layer_name] = {"q": q.to(dtype).cpu(), "method": getattr(ref.quantizer, MARK)}
    if not layers:
        return None
    buffer = io.BytesIO()
    torch.save({"format": _FORMAT, "layers": layers}, buffer)
    payload = buffer.getvalue()
    path = sidecar_path(json_path)
    atomic_write(path, lambda f: f.write(payload))
    return {"file": os.path.basename(path), "sha256": hashlib.sha256(payload).hexdigest(), "layers": sorted(layers)}


def read_weights(refs, section, json_path, strict=True):
    """Read and check the side-car named by a JSON ``weights`` section: ``[(ref, entry)]`` to pass to
    ``apply_weights`` once the amaxes are set (nothing in the model changes here)."""
    if section is None:
        return []
    path = os.path.join(os.path.dirname(os.path.abspath(os.fspath(json_path))), section["file"])
    try:
        with open(path, "rb") as f:
            payload = f.read()
    except FileNotFoundError:
        raise ValueError(f"calibration file {json_path} needs its learned weights {path}, which is missing; copy "
                         "both files together") from None
    if hashlib.sha256(payload).hexdigest() != section.get("sha256"):
        raise ValueError(f"{path} does not match calibration file {json_path} (sha256 differs); it was overwritten "
                         "by another save_calibration")
    doc = torch.load(io.BytesIO(payload), weights_only=True)
    weights = {ref.layer_name: ref for ref in refs if ref.role == "weight"}
    missing = [name for name in doc["layers"] if name not in weights]
    if missing and strict:
        raise ValueError(f"{path} holds learned weights for layers the model lacks: {missing[:8]}; quantize the "
                         "same model, or pass strict=False")
    found = [(weights[name], entry) for name, entry in doc["layers"].items() if name in weights]
    for ref, entry in found:
        if tuple(entry["q"].shape) != tuple(ref.layer.weight.shape):
            raise ValueError(f"{path}: learned weights of {ref.layer_name} have shape {tuple(entry['q'].shape)}, the "
                             f"layer's weight {tuple(ref.layer.weight.shape)}; quantize the same model")
    return found


def apply_weights(found):
    """Write the integers read by ``read_weights`` into their layers (after their amaxes are loaded)."""
    for ref, entry in found:
        write_integer_weight(ref.layer, ref.quantizer, entry["q"])
        setattr(ref.quantizer, MARK, entry["method"])
