"""Quantized modules and the quant_act switch, checked against float computations written here."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from pytorch_quantization import nn as quant_nn
from pytorch_quantization.tensor_quant import QuantDescriptor


def fake_ref(x, amax):
    """8-bit fake quantization from first principles: round(x * 127/amax) in [-128, 127], divided back."""
    scale = torch.full_like(amax, 127.0) / amax  # true division (127.0 / amax would be reciprocal * 127)
    return torch.clamp(torch.round(x * scale), -128.0, 127.0) / scale


def per_channel(w, axis=0):
    """max |w| over every dim but ``axis``, keeping dims."""
    dims = [d for d in range(w.dim()) if d != axis]
    return w.abs().amax(dim=dims, keepdim=True)


def lstm_step_ref(x, h, c, w_ih, w_hh, b_ih, b_hh):
    gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def fused_fake_weights(w_ih, w_hh):
    w = torch.cat([w_ih, w_hh], 1)
    return fake_ref(w, per_channel(w)).split([w_ih.size(1), w_hh.size(1)], 1)


def fake_act(x):
    return fake_ref(x, x.abs().max())


# (constructor, input shape, reference given (module, quantized-or-not input, fake weight))
CONV_CASES = {
    "conv1d": (lambda **k: quant_nn.QuantConv1d(3, 4, 3, padding=1, **k), (2, 3, 9),
               lambda m, x, w: F.conv1d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)),
    "conv2d": (lambda **k: quant_nn.QuantConv2d(3, 4, 3, stride=2, padding=1, **k), (2, 3, 8, 8),
               lambda m, x, w: F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)),
    "conv3d": (lambda **k: quant_nn.QuantConv3d(2, 3, 2, **k), (1, 2, 4, 4, 4),
               lambda m, x, w: F.conv3d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)),
    "convT1d": (lambda **k: quant_nn.QuantConvTranspose1d(3, 4, 3, stride=2, **k), (2, 3, 5),
                lambda m, x, w: F.conv_transpose1d(x, w, m.bias, m.stride, m.padding, m.output_padding, m.groups,
                                                   m.dilation)),
    "convT2d": (lambda **k: quant_nn.QuantConvTranspose2d(3, 4, 2, stride=2, **k), (2, 3, 4, 4),
                lambda m, x, w: F.conv_transpose2d(x, w, m.bias, m.stride, m.padding, m.output_padding, m.groups,
                                                   m.dilation)),
    "convT3d": (lambda **k: quant_nn.QuantConvTranspose3d(2, 3, 2, **k), (1, 2, 3, 3, 3),
                lambda m, x, w: F.conv_transpose3d(x, w, m.bias, m.stride, m.padding, m.output_padding, m.groups,
                                                   m.dilation)),
    "linear": (lambda **k: quant_nn.QuantLinear(6, 5, **k), (4, 6), lambda m, x, w: F.linear(x, w, m.bias)),
}


@pytest.mark.parametrize("name", sorted(CONV_CASES))
@pytest.mark.parametrize("quant_act", [False, True])
def test_weighted_module_matches_float_op_on_fake_weight(name, quant_act):
    torch.manual_seed(0)
    make, shape, ref = CONV_CASES[name]
    module = make(quant_act=quant_act)
    x = torch.randn(shape)
    # output channels: axis 0 of a convolution / linear weight, axis 1 of a transposed convolution's [in, out, k...]
    axis = 1 if name.startswith("convT") else 0
    w = fake_ref(module.weight.detach(), per_channel(module.weight.detach(), axis))
    expected = ref(module, fake_act(x) if quant_act else x, w)
    torch.testing.assert_close(module(x), expected, rtol=0, atol=0)


def lstm_ref(module, x, quant_act):
    """Single-layer unidirectional LSTM over [T, B, F] with fused fake-quantized weights (and activations)."""
    w_ih, w_hh = fused_fake_weights(module.weight_ih_l0.detach(), module.weight_hh_l0.detach())
    h = c = torch.zeros(x.size(1), module.hidden_size)
    outs = []
    for t in range(x.size(0)):
        xt, ht = x[t], h
        if quant_act:
            xt, ht = fake_act(torch.cat([x[t], h], 1)).split([x.size(2), h.size(1)], 1)
        h, c = lstm_step_ref(xt, ht, c, w_ih, w_hh, module.bias_ih_l0, module.bias_hh_l0)
        outs.append(h)
    return torch.stack(outs), h, c


@pytest.mark.parametrize("quant_act", [False, True])
def test_lstm_matches_reference_loop(quant_act):
    torch.manual_seed(1)
    module = quant_nn.QuantLSTM(4, 3, quant_act=quant_act)
    x = torch.randn(5, 2, 4)
    out, (h, c) = module(x)
    ref_out, ref_h, ref_c = lstm_ref(module, x, quant_act)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    torch.testing.assert_close(h[0], ref_h, rtol=0, atol=0)
    torch.testing.assert_close(c[0], ref_c, rtol=0, atol=0)


@pytest.mark.parametrize("quant_act", [False, True])
def test_lstm_cell_matches_reference_step(quant_act):
    torch.manual_seed(2)
    cell = quant_nn.QuantLSTMCell(4, 3, quant_act=quant_act)
    x, h0, c0 = torch.randn(2, 4), torch.randn(2, 3), torch.randn(2, 3)
    w_ih, w_hh = fused_fake_weights(cell.weight_ih.detach(), cell.weight_hh.detach())
    xq, hq = (fake_act(torch.cat([x, h0], 1)).split([4, 3], 1)) if quant_act else (x, h0)
    ref_h, ref_c = lstm_step_ref(xq, hq, c0, w_ih, w_hh, cell.bias_ih, cell.bias_hh)
    h, c = cell(x, (h0, c0))
    torch.testing.assert_close(h, ref_h, rtol=0, atol=0)
    torch.testing.assert_close(c, ref_c, rtol=0, atol=0)


def test_lstm_with_quantizers_off_equals_torch_lstm_including_packed_and_bidirectional():
    torch.manual_seed(3)
    module = quant_nn.QuantLSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    ref.load_state_dict({k: v for k, v in module.state_dict().items() if k in ref.state_dict()})
    for q in list(module._input_quantizers) + list(module._weight_quantizers):
        q.disable()
    x = torch.randn(3, 5, 3)
    out, (h, c) = module(x)
    ref_out, (ref_h, ref_c) = ref(x)
    for got, want in ((out, ref_out), (h, ref_h), (c, ref_c)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [2, 5, 3], batch_first=True, enforce_sorted=False)
    out, (h, c) = module(packed)
    ref_out, (ref_h, ref_c) = ref(packed)
    torch.testing.assert_close(out.data, ref_out.data, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h, ref_h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, ref_c, rtol=1e-5, atol=1e-6)
    unbatched = torch.randn(4, 3)
    torch.testing.assert_close(module(unbatched)[0], ref(unbatched)[0], rtol=1e-5, atol=1e-6)


INPUT_ONLY = [
    (lambda **k: quant_nn.QuantMaxPool2d(2, **k), torch.nn.MaxPool2d(2), (1, 2, 4, 4)),
    (lambda **k: quant_nn.QuantAvgPool1d(2, **k), torch.nn.AvgPool1d(2), (1, 2, 6)),
    (lambda **k: quant_nn.QuantAvgPool3d(2, **k), torch.nn.AvgPool3d(2), (1, 1, 4, 4, 4)),
    (lambda **k: quant_nn.QuantAdaptiveAvgPool2d(1, **k), torch.nn.AdaptiveAvgPool2d(1), (2, 3, 5, 5)),
    (lambda **k: quant_nn.QuantInstanceNorm2d(3, **k), torch.nn.InstanceNorm2d(3), (2, 3, 4, 4)),
]


@pytest.mark.parametrize("case", range(len(INPUT_ONLY)))
def test_input_only_modules(case):
    torch.manual_seed(4)
    make, float_module, shape = INPUT_ONLY[case]
    x = torch.randn(shape)
    torch.testing.assert_close(make(quant_act=False)(x), float_module(x), rtol=0, atol=0)
    torch.testing.assert_close(make()(x), float_module(fake_act(x)), rtol=0, atol=0)


def test_calibration_with_quant_act_false_collects_no_input_statistics():
    torch.manual_seed(5)
    conv = quant_nn.QuantConv2d(2, 3, 1, quant_act=False)
    for q in (conv.input_quantizer, conv.weight_quantizer):
        q.enable_calib()
        q.disable_quant()
    conv(torch.randn(1, 2, 3, 3))
    with pytest.raises(RuntimeError, match="^Calibrator returned None"):
        conv.input_quantizer.load_calib_amax()
    conv.weight_quantizer.load_calib_amax()
    torch.testing.assert_close(conv.weight_quantizer.amax, per_channel(conv.weight.detach()), rtol=0, atol=0)


def test_quant_act_toggles_at_runtime_and_shows_in_repr():
    torch.manual_seed(6)
    lin = quant_nn.QuantLinear(4, 2)
    x = torch.randn(3, 4)
    w = fake_ref(lin.weight.detach(), per_channel(lin.weight.detach()))
    assert lin.quant_act and "quant_act=True" in repr(lin)
    torch.testing.assert_close(lin(x), F.linear(fake_act(x), w, lin.bias), rtol=0, atol=0)
    lin.quant_act = False
    assert "quant_act=False" in repr(lin)
    torch.testing.assert_close(lin(x), F.linear(x, w, lin.bias), rtol=0, atol=0)
    with pytest.raises(TypeError, match="quant_act"):
        lin.quant_act = "no"


def test_quant_act_survives_state_dict_deepcopy_and_pickle():
    conv = quant_nn.QuantConv2d(2, 2, 1, quant_act=False)
    conv.weight_quantizer.amax = torch.ones(2, 1, 1, 1)
    state = conv.state_dict()
    assert set(state) == {"weight", "bias", "_weight_quantizer._amax"}  # quant_act is not state (as 2.2.1)
    fresh = quant_nn.QuantConv2d(2, 2, 1)
    fresh.load_state_dict(state, strict=True)
    assert fresh.quant_act is True
    torch.testing.assert_close(fresh.weight_quantizer.amax, torch.ones(2, 1, 1, 1))
    legacy = dict(state, _quant_act=torch.tensor(False))  # written by earlier versions of this package
    fresh.load_state_dict(legacy, strict=True)
    assert fresh.quant_act is False
    assert copy.deepcopy(conv).quant_act is False
    assert pickle.loads(pickle.dumps(conv)).quant_act is False


def test_upstream_state_dict_without_quant_act_key_loads_strictly():
    torch.manual_seed(7)
    model = torch.nn.Sequential(quant_nn.QuantConv2d(2, 3, 3), quant_nn.QuantLinear(3, 2, quant_act=False))
    upstream_style = {
        "0.weight": torch.randn(3, 2, 3, 3), "0.bias": torch.randn(3),
        "0._input_quantizer._amax": torch.tensor(2.0), "0._weight_quantizer._amax": torch.rand(3, 1, 1, 1) + 0.5,
        "1.weight": torch.randn(2, 3), "1.bias": torch.randn(2),
    }
    result = model.load_state_dict(upstream_style, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert model[0].quant_act is True and model[1].quant_act is False
    assert float(model[0].input_quantizer.amax) == 2.0


def test_state_dict_keys_match_upstream_layout():
    lstm = quant_nn.QuantLSTM(2, 3, num_layers=2)
    for q in list(lstm._input_quantizers) + list(lstm._weight_quantizers):
        q.amax = 1.0
    keys = set(lstm.state_dict())
    assert {"weight_ih_l1", "_input_quantizers.1._amax", "_weight_quantizers.0._amax"} <= keys


def test_class_default_quant_act():
    try:
        quant_nn.QuantMixin.set_default_quant_act(False)
        assert quant_nn.QuantConv2d(1, 1, 1).quant_act is False
        assert quant_nn.QuantConv2d(1, 1, 1, quant_act=True).quant_act is True
        assert quant_nn.QuantMaxPool2d(2).quant_act is True  # input-only modules have their own default
    finally:
        del quant_nn.QuantMixin.default_quant_act  # back to the inherited QuantActMixin default
    assert quant_nn.QuantConv2d(1, 1, 1).quant_act is True
    with pytest.raises(TypeError):
        quant_nn.QuantActMixin.set_default_quant_act(0)


def test_descriptor_kwargs_and_defaults():
    conv = quant_nn.QuantConv2d(1, 2, 1, quant_desc_input=QuantDescriptor(num_bits=4, unsigned=True),
                                quant_desc_weight=QuantDescriptor(num_bits=6))
    assert conv.input_quantizer.num_bits == 4 and conv.input_quantizer.unsigned
    assert conv.weight_quantizer.num_bits == 6 and conv.weight_quantizer.axis is None
    assert quant_nn.QuantConv2d(1, 2, 1).weight_quantizer.axis == 0
    with pytest.raises(ValueError, match="^quant_desc_input is not an instance of QuantDescriptor!"):
        quant_nn.QuantLinear(2, 2, quant_desc_input="8bit")
    with pytest.raises(ValueError, match="^Only fake quantization is supported!"):
        quant_nn.QuantLinear(2, 2, quant_desc_weight=QuantDescriptor(fake_quant=False))
    with pytest.raises(TypeError, match="^Unused keys: \\['quant_desc_bias'\\]"):
        quant_nn.QuantLinear(2, 2, quant_desc_bias=QuantDescriptor())


@pytest.mark.parametrize("cls, dims", [(quant_nn.QuantConvTranspose1d, 1), (quant_nn.QuantConvTranspose2d, 2),
                                       (quant_nn.QuantConvTranspose3d, 3)])
def test_conv_transpose_weight_amax_is_per_output_channel(cls, dims):
    """The weight of a transposed convolution is [in, out, k...]: its calibrated amax has one value per output
    channel (axis 1), computed here channel by channel."""
    torch.manual_seed(0)
    module = cls(3, 5, 2)
    assert module.weight_quantizer.axis == 1
    q = module.weight_quantizer
    q.enable_calib()
    q.disable_quant()
    q(module.weight)
    q.load_calib_amax()
    w = module.weight.detach()
    expected = torch.tensor([max(abs(v) for v in w[:, c].flatten().tolist()) for c in range(5)])
    assert tuple(q.amax.shape) == (1, 5) + (1,) * dims
    torch.testing.assert_close(q.amax.flatten(), expected, rtol=0, atol=0)


def test_aliases_are_the_quant_classes():
    assert quant_nn.Conv2d is quant_nn.QuantConv2d and quant_nn.Linear is quant_nn.QuantLinear
    assert quant_nn.LSTM is quant_nn.QuantLSTM and quant_nn.MaxPool2d is quant_nn.QuantMaxPool2d
    assert quant_nn.ConvTranspose2d is quant_nn.QuantConvTranspose2d
    assert quant_nn.AdaptiveAvgPool2d is quant_nn.QuantAdaptiveAvgPool2d


def test_functional_clip_gradients():
    x = torch.tensor([-2.0, -0.5, 0.5, 2.0], requires_grad=True)
    lo = torch.tensor(-1.0, requires_grad=True)
    hi = torch.tensor(1.0, requires_grad=True)
    y = quant_nn.functional.clip(x, lo, hi)
    assert y.tolist() == [-1.0, -0.5, 0.5, 1.0]
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 0.0]
    assert lo.grad.item() == 1.0 and hi.grad.item() == 4.0


def test_clip_module_learnable_bounds_are_parameters():
    clip = quant_nn.Clip(-1.0, 1.0, learn_min=True, learn_max=True)
    assert {n for n, _ in clip.named_parameters()} == {"clip_value_min", "clip_value_max"}
    with pytest.raises(ValueError, match="scalar"):
        quant_nn.Clip(torch.zeros(2), 1.0, learn_min=True)
