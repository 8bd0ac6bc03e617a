"""``PTQConfig``: what to quantize and how, as a small dataclass that reads and writes YAML / JSON.

A config holds two descriptor settings dicts (keyword arguments of ``QuantDescriptor``):

* ``weight``: how weights are quantized; ``None`` keeps weights in float;
* ``input``: how layer inputs (activations) are quantized; ``None`` builds the layers with
  ``quant_act=False`` so inputs pass through and no activation statistics are collected;

plus ``skip`` (glob patterns of module names left float), ``overrides`` (pattern -> settings for the
matching layers) and ``calibration`` (the defaults ``calibrate`` reads when given the config).

Presets (``PTQConfig.preset(name)`` / ``PRESETS``):

=========  ===================================================  ==========================
name       weights                                              activations
=========  ===================================================  ==========================
``fp32``   float (nothing is swapped)                           float
``w8``     INT8, per output channel (axis 0)                    float (``quant_act=False``)
``w8a8``   INT8, per output channel (axis 0)                    INT8, per tensor
``w4``     4-bit, per output channel (axis 0)                   float (``quant_act=False``)
``w4a8``   4-bit, per output channel (axis 0)                   INT8, per tensor
``w4a16``  4-bit, per output channel (axis 0)                   float (= ``w4``: weight-only, 16-bit deployment)
``fp8``    E4M3, per tensor                                     E4M3, per tensor
=========  ===================================================  ==========================

Integer presets use ``narrow_range=True`` (grid ``[-127, 127]``), the symmetric grid upstream
pytorch-quantization's GPU kernels always used and TensorRT's weight quantization implies.

A weight ``axis`` of 0 means per output channel: ``quantize_model`` gives each layer its own output-channel
axis (``utils.channel_axis.out_channel_axis``: 1 for transposed convolutions, as in 2.2.1).
"""
import copy
import dataclasses
import fnmatch
import json
import os
from typing import Optional

from pytorch_quantization.tensor_quant import QuantDescriptor
from pytorch_quantization.ptq.atomic_io import atomic_write_text

__all__ = ["PTQConfig", "PRESETS", "CALIB_METHODS"]

CALIB_METHODS = ("max", "percentile", "mse", "entropy", "auto")

_INT8_CHANNEL = {"num_bits": 8, "axis": 0, "narrow_range": True}
_INT8_TENSOR = {"num_bits": 8, "narrow_range": True}
_INT4_CHANNEL = {"num_bits": 4, "axis": 0, "narrow_range": True}
_E4M3_TENSOR = {"num_bits": (4, 3)}

PRESETS = {
    "fp32": {"weight": None, "input": None},
    "w8": {"weight": _INT8_CHANNEL, "input": None},
    "w8a8": {"weight": _INT8_CHANNEL, "input": _INT8_TENSOR},
    "w4": {"weight": _INT4_CHANNEL, "input": None},
    "fp8": {"weight": _E4M3_TENSOR, "input": _E4M3_TENSOR},
    "w4a8": {"weight": _INT4_CHANNEL, "input": _INT8_TENSOR},
    "w4a16": {"weight": _INT4_CHANNEL, "input": None},
}

_DEFAULT_CALIBRATION = {"method": "max", "percentile": 99.99, "skip_zeros": False, "num_batches": None}
_OVERRIDE_KEYS = ("weight", "input")


def _normalize_settings(settings, where):
    """Validate a descriptor settings dict (or None) by building a QuantDescriptor from it."""
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise TypeError(f"{where} must be a dict of QuantDescriptor settings or None, got {type(settings).__name__}")
    out = dict(settings)
    for key in ("num_bits", "axis"):
        if isinstance(out.get(key), list):  # YAML / JSON have no tuples
            out[key] = tuple(out[key])
    try:
        QuantDescriptor(**out)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: invalid descriptor settings {settings!r}: {err}") from None
    return out


def _jsonable(settings):
    if settings is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


@dataclasses.dataclass
class PTQConfig:
    """Post-training quantization settings; see the module docstring. Build from a preset with ``preset()``."""

    weight: Optional[dict] = dataclasses.field(default_factory=lambda: dict(_INT8_CHANNEL))
    input: Optional[dict] = dataclasses.field(default_factory=lambda: dict(_INT8_TENSOR))
    skip: list = dataclasses.field(default_factory=list)
    overrides: dict = dataclasses.field(default_factory=dict)
    calibration: dict = dataclasses.field(default_factory=lambda: dict(_DEFAULT_CALIBRATION))

    def __post_init__(self):
        self.weight = _normalize_settings(self.weight, "weight")
        self.input = _normalize_settings(self.input, "input")
        if isinstance(self.skip, str):
            self.skip = [self.skip]
        if not isinstance(self.skip, (list, tuple)) or not all(isinstance(p, str) for p in self.skip):
            raise TypeError(f"skip must be a list of glob patterns (strings), got {self.skip!r}")
        self.skip = list(self.skip)
        if not isinstance(self.overrides, dict):
            raise TypeError("overrides must be a dict of name pattern -> settings, got "
                            f"{type(self.overrides).__name__}")
        self.overrides = {pattern: self._check_override(pattern, value) for pattern, value in self.overrides.items()}
        if not isinstance(self.calibration, dict):
            raise TypeError(f"calibration must be a dict, got {type(self.calibration).__name__}")
        unknown = sorted(set(self.calibration) - set(_DEFAULT_CALIBRATION))
        if unknown:
            raise ValueError(f"calibration has unknown keys {unknown}; valid keys are {sorted(_DEFAULT_CALIBRATION)}")
        self.calibration = {**_DEFAULT_CALIBRATION, **self.calibration}
        if self.calibration["method"] not in CALIB_METHODS:
            raise ValueError(f"calibration method must be one of {CALIB_METHODS}, got {self.calibration['method']!r}")

    @staticmethod
    def _check_override(pattern, value):
        if not isinstance(pattern, str):
            raise TypeError(f"override keys must be glob patterns (strings), got {pattern!r}")
        if not isinstance(value, dict):
            raise TypeError(f"overrides[{pattern!r}] must be a dict with keys 'weight' and/or 'input', "
                            f"got {type(value).__name__}")
        unknown = sorted(set(value) - set(_OVERRIDE_KEYS))
        if unknown:
            raise ValueError(f"overrides[{pattern!r}] has unknown keys {unknown}; "
                             f"valid keys are {list(_OVERRIDE_KEYS)}")
        # partial settings are merged over the base ones, so validate only that they are a dict here
        for key, settings in value.items():
            if settings is not None and not isinstance(settings, dict):
                raise TypeError(f"overrides[{pattern!r}][{key!r}] must be a dict or None, "
                                f"got {type(settings).__name__}")
        return {k: None if v is None else dict(v) for k, v in value.items()}

    @classmethod
    def preset(cls, name, **changes):
        """The config of a named preset (``fp32``, ``w8``, ``w8a8``, ``w4``, ``fp8``), with ``changes`` applied."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} or pass a PTQConfig")
        return cls(**copy.deepcopy(PRESETS[name]), **changes)

    @classmethod
    def coerce(cls, config):
        """A PTQConfig from a PTQConfig, a preset name or a dict of fields."""
        if isinstance(config, cls):
            return config
        if isinstance(config, str):
            return cls.preset(config)
        if isinstance(config, dict):
            return cls.from_dict(config)
        raise TypeError(f"config must be a PTQConfig, a preset name {sorted(PRESETS)} or a dict, "
                        f"got {type(config).__name__}")

    def settings_for(self, name):
        """(weight settings, input settings) for the layer called ``name``, after applying matching overrides.

        Overrides apply in insertion order, so a later pattern wins over an earlier one. An override key set to
        None turns that quantization off; a dict is merged over the current settings.
        """
        weight, inp = self.weight, self.input
        for pattern, value in self.overrides.items():
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            if "weight" in value:
                weight = None if value["weight"] is None else {**(weight or {}), **value["weight"]}
            if "input" in value:
                inp = None if value["input"] is None else {**(inp or {}), **value["input"]}
        where = f"settings for layer {name!r}"
        return _normalize_settings(weight, where + " (weight)"), _normalize_settings(inp, where + " (input)")

    def calib_kwargs(self):
        """The ``calibration`` section as keyword arguments of ``calibrate``."""
        return dict(self.calibration)

    # ---- serialization -------------------------------------------------------------------------------------------
    def to_dict(self):
        return {
            "weight": _jsonable(self.weight),
            "input": _jsonable(self.input),
            "skip": list(self.skip),
            "overrides": {p: {k: _jsonable(v) for k, v in o.items()} for p, o in self.overrides.items()},
            "calibration": dict(self.calibration),
        }

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise TypeError(f"expected a mapping of PTQConfig fields, got {type(data).__name__}")
        data = dict(data)
        preset = data.pop("preset", None)
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown PTQConfig keys {unknown}; valid keys are {fields + ['preset']}")
        return cls.preset(preset, **data) if preset is not None else cls(**data)

    def to_yaml(self):
        import yaml  # pylint: disable=import-outside-toplevel
        return yaml.safe_dump(self.to_dict(), sort_keys=False, width=120)

    @classmethod
    def from_yaml(cls, text):
        import yaml  # pylint: disable=import-outside-toplevel
        return cls.from_dict(yaml.safe_load(text))

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def save(self, path):
        """Write as JSON (``.json``) or YAML (``.yaml`` / ``.yml``), atomically."""
        atomic_write_text(path, self.to_json() if _kind(path) == "json" else self.to_yaml())

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return cls.from_json(text) if _kind(path) == "json" else cls.from_yaml(text)


def _kind(path):
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".json":
        return "json"
    if ext in (".yaml", ".yml"):
        return "yaml"
    raise ValueError(f"config path must end in .json, .yaml or .yml, got {os.fspath(path)!r}")
