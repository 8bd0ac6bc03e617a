"""quantize_model: presets, what is kept through the swap, skip filters, overrides, errors."""
import re

import numpy as np
import pytest
import torch
from torch import nn

from pytorch_quantization import nn as quant_nn
from pytorch_quantization.ptq import quantize_model, calibrate, sqnr_db, find_quantizers


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                  nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = self.up(self.body(self.stem(x)))
        return self.head(y.mean(dim=(2, 3)))


def _model_and_data(seed=0):
    torch.manual_seed(seed)
    model = SmallCNN().eval()
    data = [torch.randn(4, 3, 12, 12) for _ in range(3)]
    return model, data


def _fake_quant(x, amax, bits):
    """First-principles narrow-range symmetric fake quantization (amax broadcast by the caller)."""
    bound = 2 ** (bits - 1) - 1
    scale = bound / amax
    return torch.clamp(torch.round(x * scale), -bound, bound) / scale


def _output_sqnr(preset, seed=0):
    model, data = _model_and_data(seed)
    ref = [model(x) for x in data]
    quantize_model(model, preset)
    calibrate(model, data)
    return sqnr_db(ref, [model(x) for x in data])


def test_fp32_swaps_nothing():
    model, data = _model_and_data()
    ref = model(data[0])
    summary = quantize_model(model, "fp32")
    assert summary.swapped == [] and not find_quantizers(model)
    assert set(summary.left.values()) == {"config quantizes neither weight nor input"}
    assert torch.equal(model(data[0]), ref)


def test_w8_is_float_model_with_fake_quantized_weights():
    """w8 quantizes weights per output channel and leaves activations alone (quant_act=False)."""
    model, data = _model_and_data()
    expected = _model_and_data()[0]
    with torch.no_grad():
        for layer in (expected.stem[0], expected.body[0], expected.body[2], expected.head):
            w = layer.weight
            amax = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
            w.copy_(_fake_quant(w, amax, 8))
        w = expected.up.weight  # ConvTranspose weight [in, out, k, k]: per output channel = axis 1, as 2.2.1
        w.copy_(_fake_quant(w, w.abs().amax(dim=(0, 2, 3), keepdim=True), 8))
    quantize_model(model, "w8")
    table = calibrate(model, data)
    assert set(table.column("status")) == {"ok", "quant_act=False"}
    assert all(not layer.quant_act for layer in (model.stem[0], model.up, model.head))
    torch.testing.assert_close(model(data[0]), expected(data[0]), rtol=1e-5, atol=1e-6)


def test_preset_output_quality():
    """Output SQNR against the float model, justified from the grid step.

    A weight with amax A quantized to b bits has error uniform in +-A/(2(2**(b-1)-1)); for kaiming-uniform
    weights (uniform in +-A) that is a weight SQNR of 10*log10(4 * (2**(b-1)-1)**2) dB: 48 dB at 8 bits, 23 dB at
    4 bits. A layer's output error (independent errors summed over the fan-in) has the same relative power, the
    five layers add their noise (at most -7 dB) and the global average pooling only averages noise down. So w8
    must clear 30 dB with margin, and 4 bits must cost about 25 dB more than 8 (15 asserted). Quantizing
    activations too (w8a8) only adds noise; E4M3 (relative error ~2**-4, about 31 dB per tensor) sits between.
    """
    w8, w4, w8a8, fp8 = (_output_sqnr(p) for p in ("w8", "w4", "w8a8", "fp8"))
    assert w8 > 30
    assert 8 < w4 < w8 - 15
    assert 20 < w8a8 < w8
    assert 15 < fp8 < w8


def test_w8a8_quantizes_inputs_with_calibrated_amax():
    model, data = _model_and_data()
    quantize_model(model, "w8a8")
    calibrate(model, data)
    layer = model.stem[0]
    amax_in = max(x.abs().max() for x in data)  # the stem sees the raw data: max calibration = max|x|
    torch.testing.assert_close(layer._input_quantizer.amax, amax_in)
    x = data[0]
    w = layer.weight
    w_q = _fake_quant(w, w.abs().amax(dim=(1, 2, 3), keepdim=True), 8)
    expected = nn.functional.conv2d(_fake_quant(x, amax_in, 8), w_q, layer.bias, padding=1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_swap_keeps_parameters_hooks_mode_dtype_and_numpy_ints():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel_size=np.int64(3), stride=np.int64(1), padding=(np.int64(1), np.int64(1)))
    model = nn.Sequential(conv).double().train()
    weight = conv.weight
    calls = []
    conv.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    summary = quantize_model(model, "w8")
    new = model[0]
    assert isinstance(new, quant_nn.QuantConv2d) and summary.swapped == ["0"]
    assert new.weight is weight and new.training and new.weight.dtype == torch.float64
    assert new.kernel_size == (3, 3) and all(type(v) is int for v in new.kernel_size + new.padding)
    new(torch.randn(1, 3, 5, 5, dtype=torch.float64))
    assert calls == ["QuantConv2d"]


def test_state_dict_hooks_follow_the_new_module():
    """A load_state_dict pre-hook registered with_module=True must not point at the dead float module."""
    model = nn.Sequential(nn.Linear(3, 3))
    seen = []
    model[0]._register_load_state_dict_pre_hook(lambda module, *args: seen.append(type(module).__name__),
                                                with_module=True)
    quantize_model(model, "w8")
    model.load_state_dict(model.state_dict())
    assert seen == ["QuantLinear"]


def test_subclass_is_swapped_and_noted():
    class FrameworkConvTranspose2d(nn.ConvTranspose2d):  # like mmcv's, bound before any patching
        def forward(self, x):  # pylint: disable=arguments-differ
            return super().forward(x)

    model = nn.Sequential(FrameworkConvTranspose2d(4, 4, 2, stride=2))
    summary = quantize_model(model, "w8a8")
    assert isinstance(model[0], quant_nn.QuantConvTranspose2d)
    assert "forward replaced by QuantConvTranspose2d.forward" in summary.records()[0]["detail"]


@pytest.mark.parametrize("skip", ["body.*", re.compile(r"^body\."), lambda name, module: name.startswith("body.")])
def test_skip_filters(skip):
    model, _ = _model_and_data()
    summary = quantize_model(model, "w8a8", skip=skip)
    assert sorted(summary.swapped) == ["head", "stem.0", "up"]
    assert type(model.body[0]) is nn.Conv2d and type(model.body[2]) is nn.Conv2d
    assert summary.left["body.0"].startswith("skip ")
    assert "body.0" in str(summary)


def test_overrides_per_layer():
    model, _ = _model_and_data()
    quantize_model(model, "w8a8", overrides={"head": {"weight": {"num_bits": 4}, "input": None}})
    assert model.head._weight_quantizer.num_bits == 4 and not model.head.quant_act
    assert model.stem[0]._weight_quantizer.num_bits == 8 and model.stem[0].quant_act


def test_requantizing_with_the_same_config_leaves_layers():
    model, _ = _model_and_data()
    quantize_model(model, "w8a8")
    summary = quantize_model(model, "w8a8")
    assert summary.swapped == [] and set(summary.left.values()) == {"already quantized"}


def test_requantizing_with_another_preset_raises_and_changes_nothing():
    model, data = _model_and_data()
    quantize_model(model, "w8a8", skip="head")
    calibrate(model, data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"4 layers are already quantized with other settings than w4: stem\.0: "
                                         r"weight 8bit axis=0 narrow, input 8bit per-tensor narrow \(config: weight "
                                         r"4bit axis=0 narrow, input float\).*Nothing was changed"):
        quantize_model(model, "w4")
    assert type(model.head) is nn.Linear  # the float head was not swapped either: all or nothing
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.stem[0].weight_quantizer.num_bits == 8 and model.stem[0].quant_act


def test_transposed_conv_weights_are_per_output_channel():
    """A config's weight axis 0 means per output channel: axis 1 of a transposed conv's [in, out, k, k] weight."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.ConvTranspose2d(6, 4, 3), nn.Conv2d(4, 2, 1))
    summary = quantize_model(model, "w8")
    assert model[0].weight_quantizer.axis == 1 and model[1].weight_quantizer.axis == 0
    assert "axis=1" in summary.records()[0]["detail"]
    calibrate(model, [torch.randn(1, 6, 5, 5)])
    w = model[0].weight.detach()
    by_hand = torch.tensor([[w[:, c].abs().max() for c in range(4)]]).reshape(1, 4, 1, 1)
    assert torch.equal(model[0].weight_quantizer.amax, by_hand)


def test_errors():
    with pytest.raises(ValueError, match="no layer quantize_model supports"):
        quantize_model(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), "w8a8")
    with pytest.raises(ValueError, match="unknown preset"):
        quantize_model(nn.Sequential(nn.Linear(2, 2)), "int8")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        quantize_model([nn.Linear(2, 2)], "w8")
    with pytest.raises(TypeError, match="filter entries must be"):
        quantize_model(nn.Sequential(nn.Linear(2, 2)), "w8", skip=[3])
