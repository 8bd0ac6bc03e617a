"""``TensorQuantizer``: the module that calibrates and (fake-)quantizes one tensor."""
import itertools
import logging

import numpy as np
import torch
from torch import nn

from pytorch_quantization import calib
from pytorch_quantization import kernels
from pytorch_quantization import onnx_export
from pytorch_quantization import ops
from pytorch_quantization import tensor_quant
from pytorch_quantization import utils as quant_utils
from pytorch_quantization.nn.modules.clip import Clip

__all__ = ["TensorQuantizer"]

logger = logging.getLogger(__name__)


def _to_amax_tensor(value, name):
    """``value`` (number, list, ndarray or tensor) as a float32 tensor, validated as a range: finite and >= 0."""
    if isinstance(value, torch.Tensor):
        out = value.detach().to(torch.float32)
    else:
        try:
            out = torch.from_numpy(np.array(value, dtype=np.float32))
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number, list, ndarray or tensor, got {type(value).__name__}") from None
    if out.numel() == 0:
        raise ValueError(f"{name} is empty; pass one value per tensor or per channel")
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got {out.flatten()[:8].tolist()}; recalibrate, or pass the absolute "
                         "range of the data, e.g. x.abs().amax()")
    if (out < 0).any():
        raise ValueError(f"Negative values in amax: {name} got {out.flatten()[:8].tolist()}; pass the absolute range "
                         "of the data, e.g. x.abs().amax()")
    return out.clone()


def tensor_token(tensor):
    """What identifies ``tensor``'s current contents without reading them: object, version, storage, layout
    (None for None: a module may register a buffer as None; version -1 for an inference tensor, which has none)."""
    if tensor is None:
        return None
    # pylint: disable=protected-access
    version = -1 if tensor.is_inference() else tensor._version
    return (id(tensor), version, tensor.data_ptr(), tensor.dtype, tensor.device, tensor.shape)


def _snapshot_in_python(tensors):
    return tuple(map(tensor_token, tensors))


#: ``tensors_snapshot(tensors)``: one comparable value for the ``tensor_token`` of each of ``tensors`` (a tuple, None
#: allowed), equal exactly when every token is. The compiled extension reads them in one C call
#: (``csrc/tensor_snapshot.h``): the weight cache checks one per quantized layer on every forward, where reading the
#: six attributes per tensor from Python cost about 5 us per layer in a running model.
tensors_snapshot = ops.C_FUNCTIONS.get("tensor_snapshot", _snapshot_in_python)


_STAMPS = itertools.count(1)


class TensorQuantizer(nn.Module):
    """Calibrate and fake-quantize a tensor as described by a ``QuantDescriptor``.

    Stages, each switchable at run time: ``calib`` (feed every input to the calibrator),
    ``clip`` (clip to a learned range, only with ``learn_amax``) and ``quant`` (quantize).
    ``disable()`` bypasses the module altogether.

    The range ``amax`` comes, in order, from the clip range when ``learn_amax``, the ``_amax``
    buffer (set from the descriptor, the ``amax`` setter, ``load_calib_amax`` or a state_dict),
    or the current input (dynamic: ``utils.reduce_amax`` over every axis not kept by ``axis``).
    A per-channel ``_amax`` is kept in the shape that broadcasts to the input, e.g. ``[C, 1, 1, 1]``
    for ``axis=0`` of a 4-D weight; a 1-D ``[C]`` amax is reshaped to that form when used.

    Args:
        quant_desc: a ``QuantDescriptor``.
        disabled: bypass the module (return the input unchanged).
        if_quant: run the quantization stage.
        if_clip: run the clip stage (needs ``learn_amax``).
        if_calib: run the calibration stage.

    Class attributes:
        use_fb_fake_quant: quantize with ``torch.fake_quantize_per_tensor_affine`` /
            ``torch.fake_quantize_per_channel_affine`` instead of the package's kernels (full
            signed range and ``round(x / scale)`` as in ONNX); kept for upstream compatibility.
    """

    use_fb_fake_quant = False
    _enable_onnx_export = False
    #: renewed whenever an attribute of this quantizer is set or deleted or a buffer registered: what is derived
    #: from its settings (``_derived``) is derived again only after a change, not on every call
    _settings_stamp = 0
    #: the plain attributes ``forward`` reads: with the buffers, what its result depends on (``_reuse.settings``)
    FORWARD_SETTINGS = ("_num_bits", "_fake_quant", "_axis", "_scale_amax", "_learn_amax", "_unsigned",
                        "_narrow_range", "_disabled", "_if_quant", "_if_clip", "_if_calib", "_enable_onnx_export")

    def __init__(self, quant_desc=tensor_quant.QuantDescriptor(), disabled=False, if_quant=True, if_clip=False,
                 if_calib=False):
        super().__init__()
        if not isinstance(quant_desc, tensor_quant.ScaledQuantDescriptor):
            raise TypeError(f"quant_desc must be a QuantDescriptor, got {type(quant_desc).__name__}")
        self._num_bits = quant_desc.num_bits
        self._fake_quant = quant_desc.fake_quant
        self._axis = quant_desc.axis
        self._scale_amax = quant_desc.scale_amax
        self._learn_amax = quant_desc.learn_amax
        self._unsigned = quant_desc.unsigned
        self._narrow_range = quant_desc.narrow_range

        self._scale = None if not quant_desc.fake_quant else 1.0
        self._disabled = bool(disabled)
        self._if_quant = bool(if_quant)
        self._if_clip = False
        self._if_calib = bool(if_calib)

        self._amax_note = None
        if quant_desc.amax is not None:
            self.register_buffer("_amax", torch.tensor(quant_desc.amax))
            self._note_amax()
        if self._learn_amax:
            init_amax = float(np.max(quant_desc.amax)) if quant_desc.amax is not None else 1.0
            self.clip = Clip(-init_amax, init_amax, learn_min=True, learn_max=True)
            self.enable_clip()
        if if_clip:
            self.enable_clip()

        if quant_desc.calib_method == "histogram":
            self._calibrator = calib.HistogramCalibrator(num_bits=self._num_bits, axis=self._axis,
                                                         unsigned=self._unsigned)
        else:
            self._calibrator = calib.MaxCalibrator(num_bits=self._num_bits, axis=self._axis, unsigned=self._unsigned)

    # ----------------------------------------------------------------- settings stamp
    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        self.__dict__["_settings_stamp"] = next(_STAMPS)

    def __delattr__(self, name):
        super().__delattr__(name)
        self.__dict__["_settings_stamp"] = next(_STAMPS)

    def register_buffer(self, name, tensor, persistent=True):
        super().register_buffer(name, tensor, persistent)
        self.__dict__["_settings_stamp"] = next(_STAMPS)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_derived_cache", None)  # derived again after copying or unpickling
        return state

    def _derived(self, name, compute):
        """``compute(self)``, remembered until this quantizer's settings change (``_settings_stamp``).

        For values that depend on attributes and on which buffers exist, never on buffer values, so that
        the per-call checks of the reuse and direct-kernel paths cost a lookup instead of a dozen."""
        cache = self.__dict__.get("_derived_cache")
        if cache is None or cache[0] != self._settings_stamp:
            cache = (self._settings_stamp, {})
            self.__dict__["_derived_cache"] = cache  # not through __setattr__: no new stamp
        values = cache[1]
        if name not in values:
            values[name] = compute(self)
        return values[name]

    # ----------------------------------------------------------------- properties
    @property
    def num_bits(self):
        return self._num_bits

    @num_bits.setter
    def num_bits(self, value):
        self._num_bits = tensor_quant._validate_num_bits(value)  # pylint: disable=protected-access

    @property
    def maxbound(self):
        """Largest representable magnitude on the quantized grid (448 for E4M3)."""
        if self._num_bits == (4, 3):
            return 448.0
        return (1 << (self._num_bits - 1 + int(self._unsigned))) - 1

    @property
    def unsigned(self):
        return self._unsigned

    @unsigned.setter
    def unsigned(self, value):
        self._unsigned = bool(value)

    @property
    def narrow_range(self):
        return self._narrow_range

    @narrow_range.setter
    def narrow_range(self, value):
        self._narrow_range = bool(value)

    @property
    def axis(self):
        return self._axis

    @property
    def fake_quant(self):
        return self._fake_quant

    @property
    def scale(self):
        """Scale of the last real (``fake_quant=False``) quantization; 1.0 in fake-quant mode."""
        return self._scale

    @property
    def step_size(self):
        """amax / maxbound, the size of one quantization step; None while amax is dynamic."""
        if not hasattr(self, "_amax"):
            return None
        return self._amax / (2.0 ** (self._num_bits - 1 + int(self._unsigned)) - 1.0)

    def _own_tensor(self, name):
        """The buffer ``name``, or a plain tensor attribute of that name someone set, or None (a direct lookup:
        ``getattr`` on a missing module attribute raises inside ``nn.Module.__getattr__`` first, slowly)."""
        return self._buffers.get(name, self.__dict__.get(name))

    @property
    def amax(self):
        return self._own_tensor("_amax")

    @amax.setter
    def amax(self, value):
        """Set a static amax: a number, list, ndarray or tensor of any shape that broadcasts to the inputs (as in
        2.2.1). Validated here (finite, >= 0), so the forward needs no value checks. Changing the shape of an
        existing amax raises ``RuntimeError`` as in 2.2.1; setting None logs an error and changes nothing."""
        if value is None:
            logger.error("Setting amax no None is meaningless. To go back to dynamic ranges: del quantizer._amax")
            return
        value = _to_amax_tensor(value, "amax")
        if hasattr(self, "_amax"):
            if self._amax.shape != value.shape:
                raise RuntimeError(f"Changing shape when setting amax is not allowed. Current shape "
                                   f"{tuple(self._amax.shape)}, new {tuple(value.shape)}; `del quantizer._amax` first "
                                   "to change it")
            self._amax.copy_(value)
        else:
            self.register_buffer("_amax", value)
        self._note_amax()

    @property
    def pre_quant_scale(self):
        """Per-channel input scaling applied before quantization (SmoothQuant-style), or None."""
        return self._own_tensor("_pre_quant_scale")

    @pre_quant_scale.setter
    def pre_quant_scale(self, value):
        if value is None:
            logger.error("Setting pre_quant_scale no None is meaningless. To remove it: del quantizer._pre_quant_scale")
            return
        value = torch.as_tensor(value, dtype=torch.float32).detach().clone()
        if not torch.isfinite(value).all():
            raise ValueError("pre_quant_scale must be finite")
        if hasattr(self, "_pre_quant_scale"):
            if self._pre_quant_scale.shape != value.shape:
                raise RuntimeError(f"Changing shape when setting pre_quant_scale is not allowed. Current shape "
                                   f"{tuple(self._pre_quant_scale.shape)}, new {tuple(value.shape)}; "
                                   "`del quantizer._pre_quant_scale` first")
            self._pre_quant_scale.copy_(value)
        else:
            self.register_buffer("_pre_quant_scale", value)

    # ----------------------------------------------------------------- stage switches
    def disable(self):
        """Bypass the module."""
        self._disabled = True

    def enable(self):
        self._disabled = False

    def disable_clip(self):
        self._if_clip = False
        if hasattr(self, "clip"):
            self.clip.clip_value_min.requires_grad = False
            self.clip.clip_value_max.requires_grad = False

    def enable_clip(self):
        if not self._learn_amax:
            raise ValueError("learn_amax is False. Cannot enable clip. There is no range to learn: use a descriptor "
                             "with learn_amax=True")
        self.clip.clip_value_min.requires_grad = True
        self.clip.clip_value_max.requires_grad = True
        self._if_clip = True

    def disable_calib(self):
        self._if_calib = False

    def enable_calib(self):
        if self._calibrator is None:
            raise ValueError("Calibrator was not created, cannot enable calibration.")
        self._if_calib = True

    def disable_quant(self):
        self._if_quant = False

    def enable_quant(self):
        self._if_quant = True

    # ----------------------------------------------------------------- calibration
    def load_calib_amax(self, *args, **kwargs):
        """Set amax from the calibrator: ``*args`` / ``**kwargs`` go to its ``compute_amax``.

        Keyword ``strict`` (default True): when the calibrator has seen no data, raise
        ``RuntimeError``; with ``strict=False`` log a warning and leave amax as it is (upstream
        wrote NaN, which every later quantization rejects).
        """
        strict = kwargs.pop("strict", True)
        if getattr(self, "_calibrator", None) is None:
            raise RuntimeError("Calibrator not created.")
        calib_amax = self._calibrator.compute_amax(*args, **kwargs)
        if calib_amax is None:
            msg = "Calibrator returned None. This usually happens when calibrator hasn't seen any tensor."
            if strict:
                raise RuntimeError(msg + " Passing 'strict=False' to `load_calib_amax()` will ignore the error "
                                   "(and leave amax unchanged). Run calibration data through the model first.")
            logger.warning("%s amax left unchanged.", msg)
            return
        calib_amax = _to_amax_tensor(calib_amax, "calibrated amax")
        if hasattr(self, "_amax"):
            calib_amax = calib_amax.to(self._amax.device)
            del self._amax
        self.register_buffer("_amax", calib_amax)
        self._note_amax()

    def _note_amax(self):
        """Remember a per-tensor amax's value with the token of the tensor it was read from.

        Called where amax is set, loaded, calibrated or moved (reading it there is allowed), so that
        ``amax_if_unchanged`` can tell the value during a forward without reading device memory.
        """
        amax = self.amax
        if amax is None or amax.numel() != 1 or amax.device.type == "meta" or amax.is_inference() \
                or torch.compiler.is_compiling():
            self._amax_note = None  # an inference tensor keeps no version counter: its edits could not be seen
        else:
            self._amax_note = (tensors_snapshot((amax,)), float(amax.detach().reshape(()).item()))

    def amax_if_unchanged(self):
        """The per-tensor amax as a Python float when it has not changed since it was last set, loaded,
        calibrated or moved; None otherwise (per-channel or dynamic amax, an in-place edit since). Reads no
        tensor. An edit through ``amax.data`` (which has a version counter of its own) is not seen."""
        note = self.__dict__.get("_amax_note")
        amax = self._buffers.get("_amax")  # only a buffer amax is offered (shared_input reads it there)
        if note is None or amax is None or note[0] != tensors_snapshot((amax,)):
            return None
        return note[1]

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._note_amax()
        return out

    def init_learn_amax(self):
        """Initialise the learned range from the fixed amax (max over channels for per-channel amax)."""
        if not self._learn_amax:
            raise RuntimeError("Called init_learn_amax with learn_amax=False.")
        if not hasattr(self, "_amax"):
            raise RuntimeError("No amax to initialise from; calibrate or set amax first.")
        init_amax = self._amax.max()
        self.clip.clip_value_min.data.copy_(-init_amax)
        self.clip.clip_value_max.data.copy_(init_amax)

    # ----------------------------------------------------------------- quantization
    def _kept_axes(self, inputs):
        """The axes that keep their own amax, normalised to ``0..dim-1``; None for per-tensor."""
        if self._axis is None:
            return None
        axes = self._axis if isinstance(self._axis, (tuple, list)) else (self._axis,)
        dim = inputs.dim()
        for a in axes:
            if not -dim <= a < dim:
                raise ValueError(f"axis={self._axis} is out of range for a {dim}-D input of shape "
                                 f"{tuple(inputs.shape)}; use a descriptor axis in [{-dim}, {dim - 1}]")
        return tuple(sorted(a % dim for a in axes))

    def _fit_amax(self, amax, inputs):
        """``amax`` in the shape that broadcasts along the kept axes of ``inputs``."""
        if amax.numel() == 1:
            return amax.reshape(())
        axes = self._kept_axes(inputs)
        if axes is not None:
            expected = tuple(inputs.shape[i] if i in axes else 1 for i in range(inputs.dim()))
            if tuple(amax.shape) == expected:
                return amax
            if amax.dim() != inputs.dim() and [s for s in amax.shape if s != 1] == [s for s in expected if s != 1]:
                return amax.reshape(expected)
        if amax.dim() <= inputs.dim() and all(a in (1, x) for a, x in zip(reversed(amax.shape),
                                                                            reversed(inputs.shape))):
            return amax  # any shape that broadcasts to the input, as 2.2.1 accepts
        raise ValueError(f"amax of shape {tuple(amax.shape)} does not fit axis={self._axis} of an input of shape "
                         f"{tuple(inputs.shape)} and does not broadcast to it; recalibrate or set amax for this "
                         "tensor")

    def _get_amax(self, inputs):
        """amax from the buffer, or computed from ``inputs`` when there is none; float32 or float64."""
        amax = self.amax
        if amax is not None:
            amax = self._fit_amax(amax, inputs)
            if amax.device != inputs.device:
                amax = amax.to(inputs.device)
        else:
            axes = self._kept_axes(inputs)
            reduce_axis = None if axes is None else [i for i in range(inputs.dim()) if i not in axes]
            amax = quant_utils.reduce_amax(inputs, axis=reduce_axis, keepdims=True)
        if self._scale_amax is not None:
            amax = amax.detach() * self._scale_amax
        # `.data` under the TorchScript tracer so that it records amax as a constant, which its Q/DQ export needs;
        # detach() elsewhere (torch.export turns `.data` into a lifted constant that the ONNX exporter cannot save)
        amax = amax.data if torch.jit.is_tracing() else amax.detach()
        if amax.dtype not in (torch.float32, torch.float64):
            amax = amax.float()
        return amax

    def _fb_fake_quant(self, inputs, amax):
        """PyTorch's native fake quantization over the full signed range (what ONNX Q/DQ computes)."""
        bound = self.maxbound
        qmin = 0 if self._unsigned else -bound - 1
        if amax.numel() == 1:  # tensor scale / zero point: no host sync
            scale = (amax.reshape(()) / bound).float()
            zero_point = torch.zeros((), dtype=torch.int32, device=inputs.device)
            return torch.fake_quantize_per_tensor_affine(inputs, scale, zero_point, qmin, bound)
        axes = [i for i, s in enumerate(amax.shape) if s != 1]
        if len(axes) != 1:
            raise ValueError(f"native fake quantization supports one axis, amax has shape {tuple(amax.shape)}")
        scale = (amax.reshape(-1) / bound).float()
        zero_point = torch.zeros(scale.shape, dtype=torch.int32, device=inputs.device)
        return torch.fake_quantize_per_channel_affine(inputs, scale, zero_point, axes[0], qmin, bound)

    def _quant_forward(self, inputs):
        exporting = self._enable_onnx_export and onnx_export.use_export_path()
        if self._num_bits == (4, 3):
            amax = self._get_amax(inputs)
            if exporting:
                return onnx_export.export_fake_e4m3(inputs, amax)
            return tensor_quant.scaled_e4m3_lean(inputs, amax)
        if self._learn_amax:
            inputs = self.clip(inputs)
            amax = torch.max(-self.clip.clip_value_min, self.clip.clip_value_max).detach()
        else:
            amax = self._get_amax(inputs)
        if exporting and self._fake_quant:
            return onnx_export.export_fake_quant(inputs, amax, self._num_bits, self._unsigned)
        if not self._fake_quant:
            outputs, self._scale = tensor_quant.tensor_quant(inputs, amax, self._num_bits, self._unsigned,
                                                             self._narrow_range)
            return outputs
        if TensorQuantizer.use_fb_fake_quant:
            if inputs.dtype == torch.half or amax.dtype == torch.half:
                raise TypeError("native fake quantization (use_fb_fake_quant) needs float32 inputs; disable AMP")
            return self._fb_fake_quant(inputs, amax)
        return tensor_quant.fake_tensor_quant_lean(inputs, amax, self._num_bits, self._unsigned, self._narrow_range)

    def _check_onnx_readiness(self):
        if not hasattr(self, "_amax") and not self._learn_amax:
            raise RuntimeError("this quantizer has no amax; ONNX export needs calibrated (static) ranges: calibrate "
                               "and call load_calib_amax() before exporting")
        if self._if_calib:
            logger.warning("quantizer is still in calibration mode while exporting to ONNX")

    def _only_quantizes(self):
        """Whether ``forward`` does nothing but quantize: enabled, quantizing, and neither calibrating, clipping nor
        learning its range (what the direct path and the reuse checks of ``_reuse`` require)."""
        return not (self._disabled or not self._if_quant or self._if_calib or self._if_clip or self._learn_amax)

    def _direct_plan(self):
        """``(amax, num_bits, unsigned, narrow_range)`` when ``forward`` is exactly one compiled kernel call with the static
        per-tensor amax buffer (fake quantization, or E4M3 with a float32 amax; enabled, quantizing, no
        calibration, clip, learned range, ``scale_amax`` or ``pre_quant_scale``), else None."""
        amax = self._buffers.get("_amax")
        if (amax is None or amax.numel() != 1 or amax.device.type == "meta" or not self._only_quantizes()
                or not self._fake_quant or self._scale_amax is not None or self.pre_quant_scale is not None):
            return None
        if self._num_bits == (4, 3):
            return (amax, self._num_bits, None, None) if amax.dtype == torch.float32 else None
        try:  # the full path's checks of num_bits: where they fail, it raises their errors
            tensor_quant.check_quant_bits(self._num_bits, self._unsigned)
            kernels.check_num_bits(self._num_bits)
        except ValueError:
            return None
        if amax.dtype not in (torch.float32, torch.float64):
            return None
        return amax, self._num_bits, self._unsigned, self._narrow_range

    def _direct_forward(self, inputs):
        """``forward(inputs)`` computed by one direct kernel call where that gives the same result, else None.

        The full path below spends most of a small tensor's time in Python (amax lookup and reshaping, argument
        checks, autograd); with a static per-tensor amax, settings unchanged since the plan was made
        (``_derived``) and ``kernels.can_call_direct`` holding, the kernel it ends in is called straight away."""
        if torch.compiler.is_compiling():  # the graph records the checked path
            return None
        plan = self._derived("direct_plan", TensorQuantizer._direct_plan)
        if plan is None or TensorQuantizer.use_fb_fake_quant or self._enable_onnx_export:
            return None
        amax, num_bits, unsigned, narrow_range = plan
        # a buffer swapped in without setattr (torch.func.functional_call) gets no new stamp: compare it too
        if self._buffers.get("_amax") is not amax or not kernels.can_call_direct(inputs, amax):
            return None
        if num_bits == (4, 3):
            return kernels.scaled_e4m3_direct(inputs, amax)
        return kernels.fake_quant_direct(inputs, amax, num_bits, unsigned, narrow_range)

    def forward(self, inputs):
        """Quantize ``inputs`` (and feed them to the calibrator when calibrating)."""
        direct = self._direct_forward(inputs)
        if direct is not None:
            return direct
        pre_quant_scale = self.pre_quant_scale
        if pre_quant_scale is not None:
            inputs = inputs * pre_quant_scale
        if self._disabled:
            return inputs
        if self._enable_onnx_export and self._if_quant:
            self._check_onnx_readiness()
        outputs = inputs
        if self._if_calib:
            if self._calibrator is None:
                raise RuntimeError("Calibrator was not created.")
            self._calibrator.collect(inputs)
        if self._if_clip:
            outputs = self.clip(inputs)
        if self._if_quant:
            outputs = self._quant_forward(inputs)
        return outputs

    # ----------------------------------------------------------------- repr / state_dict
    def _short_amax(self, fmt=".4f"):
        if not hasattr(self, "_amax"):
            return "dynamic"
        if self._amax.numel() == 1:
            return f"{self._amax.item():{fmt}}"
        return f"[{self._amax.min().item():{fmt}}, {self._amax.max().item():{fmt}}]({self._amax.numel()})"

    def extra_repr(self):
        if self._disabled:
            return "disabled"
        parts = [f"{'unsigned ' if self._unsigned else ''}{self._num_bits}bit"]
        if self._narrow_range:
            parts.append("narrow")
        if self._fake_quant:
            parts.append("fake")
        parts.append(f"axis={self._axis}" if self._axis is not None else "per-tensor")
        parts.append(f"amax={self._short_amax()}")
        if self._scale_amax:
            parts.append(f"*{self._scale_amax}")
        if self.pre_quant_scale is not None:
            parts.append("pre_quant_scale")
        if self._learn_amax:
            parts.append("learned")
        if self._calibrator is not None:
            parts.append(f"calibrator={self._calibrator.__class__.__name__}")
        if not self._fake_quant and self._scale is not None:
            parts.append(f"scale={self._scale}")
        for flag, name in ((self._if_quant, "quant"), (self._if_clip, "clip"), (self._if_calib, "calib")):
            if flag:
                parts.append(name)
        return " ".join(parts)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Create ``_amax`` / ``_pre_quant_scale`` when the state_dict has them and this quantizer does not yet
        (an uncalibrated model loading a calibrated checkpoint). A loaded amax is validated here (finite, >= 0), so
        the forward does not need to check it."""
        if prefix + "_amax" in state_dict:
            _to_amax_tensor(state_dict[prefix + "_amax"], f"state_dict entry {prefix}_amax")
        for name in ("_amax", "_pre_quant_scale"):
            key = prefix + name
            if key in state_dict and name not in self._buffers:
                self.register_buffer(name, state_dict[key].detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._note_amax()

    # ----------------------------------------------------------------- public state for tools (ptq, integration)
    @property
    def is_enabled(self) -> bool:
        """False after ``disable()`` (the module then returns its input unchanged)."""
        return not self._disabled

    @property
    def is_quant_enabled(self) -> bool:
        """Whether the quantization stage runs (``enable_quant`` / ``disable_quant``)."""
        return self._if_quant

    @property
    def is_calib_enabled(self) -> bool:
        """Whether inputs are fed to the calibrator (``enable_calib`` / ``disable_calib``)."""
        return self._if_calib

    @property
    def calibrator(self):
        """The calibrator that collects statistics while calibrating (None when none was created)."""
        return self._calibrator

    @calibrator.setter
    def calibrator(self, value):
        """Set a calibrator, or None to drop it (calibration can then not be enabled)."""
        if value is not None and not isinstance(value, calib.calibrator._Calibrator):  # pylint: disable=protected-access
            raise TypeError(f"calibrator must be a calibrator such as calib.MaxCalibrator or "
                            f"calib.HistogramCalibrator, got {type(value).__name__}")
        self._calibrator = value

    def reset_amax(self) -> None:
        """Forget the static amax, so the range is dynamic again (then any amax shape can be set)."""
        if "_amax" in self._buffers:
            del self._amax
        self._amax_note = None
