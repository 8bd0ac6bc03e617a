"""Every error that pytorch-quantization 2.2.1 raises on purpose, raised here with the same exception class and
with 2.2.1's message as the start of ours (our hint may follow).

One row per ``raise`` of 2.2.1's package that a user can reach; the rows name the public call that triggers it.
"""
import numpy as np
import pytest
import torch

from pytorch_quantization import calib
from pytorch_quantization import nn as quant_nn
from pytorch_quantization import tensor_quant
from pytorch_quantization.nn import functional as QF
from pytorch_quantization.optim import helper
from pytorch_quantization.tensor_quant import QuantDescriptor
from pytorch_quantization.utils import reduce_amax


def _max_calibrator_shape_change():
    calibrator = calib.MaxCalibrator(8, 0, False)
    calibrator.collect(torch.ones(2, 3))
    calibrator.collect(torch.ones(3, 3))


def _histogram(method="percentile", **kwargs):
    calibrator = calib.HistogramCalibrator(8, None, False)
    calibrator.collect(torch.rand(100))
    calibrator.compute_amax(method, **kwargs)


def _clip_backward_non_scalar():
    lo = torch.zeros(3, 7, requires_grad=True)
    hi = torch.ones(3, 7, requires_grad=True)
    QF.clip(torch.randn(3, 7), lo, hi).sum().backward()


def _quantizer(**kwargs):
    return quant_nn.TensorQuantizer(QuantDescriptor(**kwargs))


def _set_twice(attribute, first, second):
    quantizer = _quantizer()
    setattr(quantizer, attribute, first)
    setattr(quantizer, attribute, second)


def _without_calibrator(action):
    quantizer = _quantizer()
    quantizer._calibrator = None  # pylint: disable=protected-access
    if action == "forward":
        quantizer._if_calib = True  # pylint: disable=protected-access
        quantizer(torch.ones(2))
    else:
        getattr(quantizer, action)()


def _lstm_forward(x, hx=None):
    quant_nn.QuantLSTM(4, 3)(x, hx)


def _cell_forward(x, hx):
    quant_nn.QuantLSTMCell(4, 3)(x, hx)


# (id, call, exception class, 2.2.1's message: the start of ours)
CASES = [
    # tensor_quant.py
    ("desc-negative-bits", lambda: QuantDescriptor(num_bits=-1), ValueError, "num_bits must be > 0, not -1."),
    ("desc-fp-format", lambda: QuantDescriptor(num_bits=(5, 2)), TypeError,
     "num_bits must be a postive integer or tuple (4,3), not"),
    ("desc-float-bits", lambda: QuantDescriptor(num_bits=8.5), TypeError,
     "num_bits must be a postive integer or tuple (4,3), not"),
    ("desc-name", lambda: QuantDescriptor(name=3), TypeError, "name must be a string or None, not"),
    ("desc-learn-axis", lambda: QuantDescriptor(axis=(1, 2), amax=0.7, learn_amax=True), TypeError,
     "axis is ignored and must be None when learn_amax is true, got"),
    ("desc-amax-type", lambda: QuantDescriptor(amax="oops"), TypeError, "amax must be float, list or ndarray, not"),
    ("desc-unused", lambda: QuantDescriptor(bogus=1), TypeError, "Unused keys:"),
    ("e4m3-format", lambda: tensor_quant.scaled_e4m3(torch.ones(3), 1.0, 5, 2), NotImplementedError,
     "Only support E=4 & M=3 for now."),
    ("fp16-scale", lambda: tensor_quant.tensor_quant(torch.ones(4).half(), torch.tensor(1e-4).half(), 8, False),
     ValueError, "scale is too large for FP16 with amax="),
    ("unsigned-negative", lambda: tensor_quant.tensor_quant(-torch.ones(3), torch.tensor(1.0), 8, True), TypeError,
     "Negative values encountered in unsigned quantization."),
    ("negative-amax", lambda: tensor_quant.tensor_quant(torch.ones(3), torch.tensor(-1.0)), ValueError,
     "Negative values in amax"),
    # calib/
    ("max-shape", _max_calibrator_shape_change, RuntimeError, "amax shape changed!"),
    ("hist-axis", lambda: calib.HistogramCalibrator(8, 0, False), NotImplementedError,
     "Calibrator histogram collection only supports per tensor scaling"),
    ("hist-method", lambda: _histogram("kl"), TypeError, "Unknown calibration method"),
    ("hist-percentile", lambda: _histogram(percentile=101), ValueError,
     "Invalid percentile. Must be in range 0 <= percentile <= 100."),
    # nn/modules/_utils.py
    ("module-desc-type", lambda: quant_nn.QuantLinear(2, 2, quant_desc_input="8bit"), ValueError,
     "quant_desc_input is not an instance of QuantDescriptor!"),  # 2.2.1 prints a literal "{}" for the name
    ("module-real-quant", lambda: quant_nn.QuantConv2d(2, 2, 1, quant_desc_weight=QuantDescriptor(fake_quant=False)),
     ValueError, "Only fake quantization is supported!"),
    ("module-unused", lambda: quant_nn.QuantLinear(2, 2, descriptor=QuantDescriptor()), TypeError, "Unused keys:"),
    ("pool-unused", lambda: quant_nn.QuantMaxPool2d(2, descriptor=QuantDescriptor()), TypeError, "Unused keys:"),
    # nn/modules/clip.py, nn/functional.py
    ("clip-learn-tensor", lambda: quant_nn.Clip(torch.tensor(0.3), torch.tensor(0.7), learn_min=True), ValueError,
     "clip_value_min/clip_value_max must be scalar for initilizing learnable range."),
    ("clip-grad-shape", _clip_backward_non_scalar, ValueError, "Learnable min/max can only be scalar, got size"),
    # nn/modules/tensor_quantizer.py
    ("enable-clip", lambda: _quantizer().enable_clip(), ValueError, "learn_amax is False. Cannot enable clip."),
    ("enable-calib", lambda: _without_calibrator("enable_calib"), ValueError,
     "Calibrator was not created, cannot enable calibration."),
    ("amax-shape", lambda: _set_twice("amax", 1.0, np.ones(2)), RuntimeError,
     "Changing shape when setting amax is not allowed."),
    ("pre-quant-scale-shape", lambda: _set_twice("pre_quant_scale", torch.ones(2), torch.ones(3)), RuntimeError,
     "Changing shape when setting pre_quant_scale is not allowed."),
    ("load-no-calibrator", lambda: _without_calibrator("load_calib_amax"), RuntimeError, "Calibrator not created."),
    ("load-nothing-seen", lambda: _quantizer().load_calib_amax(), RuntimeError,
     "Calibrator returned None. This usually happens when calibrator hasn't seen any tensor."),
    ("init-learn", lambda: _quantizer().init_learn_amax(), RuntimeError,
     "Called init_learn_amax with learn_amax=False."),
    ("forward-no-calibrator", lambda: _without_calibrator("forward"), RuntimeError, "Calibrator was not created."),
    # nn/modules/quant_rnn.py
    ("lstm-dropout", lambda: quant_nn.QuantLSTM(4, 3, dropout=2.0), ValueError,
     "dropout should be a number in range [0, 1]"),
    ("lstm-proj-negative", lambda: quant_nn.QuantLSTM(4, 3, proj_size=-1), ValueError,
     "proj_size should be a positive integer or zero to disable projections"),
    ("lstm-proj", lambda: quant_nn.QuantLSTM(4, 3, proj_size=2), ValueError,
     "proj_size is not supported in pytorch-quantization yet"),
    ("lstm-input-dims", lambda: _lstm_forward(torch.ones(1, 2, 3, 4)), RuntimeError,
     "input must have 3 dimensions, got 4"),
    ("lstm-input-size", lambda: _lstm_forward(torch.ones(5, 2, 6)), RuntimeError,
     "input.size(-1) must be equal to input_size. Expected 4, got 6"),
    ("lstm-hidden", lambda: _lstm_forward(torch.ones(5, 2, 4), (torch.zeros(1, 3, 3), torch.zeros(1, 2, 3))),
     RuntimeError, "Expected hidden[0] size (1, 2, 3), got (1, 3, 3)"),
    ("lstm-cell", lambda: _lstm_forward(torch.ones(5, 2, 4), (torch.zeros(1, 2, 3), torch.zeros(1, 2, 5))),
     RuntimeError, "Expected hidden[1] size (1, 2, 3), got (1, 2, 5)"),
    ("cell-input-size", lambda: _cell_forward(torch.ones(2, 6), None), RuntimeError,
     "input has inconsistent input_size: got 6, expected 4"),
    ("cell-hidden-batch", lambda: _cell_forward(torch.ones(2, 4), (torch.zeros(3, 3), torch.zeros(2, 3))),
     RuntimeError, "Input batch size 2 doesn't match hidden[0] batch size 3"),
    ("cell-hidden-size", lambda: _cell_forward(torch.ones(2, 4), (torch.zeros(2, 3), torch.zeros(2, 5))),
     RuntimeError, "hidden[1] has inconsistent hidden_size: got"),
    # optim/helper.py
    ("groups-patterns", lambda: helper.group_parameters(None, [["a"], "b"]), TypeError,
     "patterns_list must be list of list of patterns"),
    ("groups-lrs", lambda: helper.group_parameters(None, [["a"], ["b"]], lrs=[0.1]), TypeError,
     "len(lrs) must match len(patterns_list)"),
    ("groups-momentums", lambda: helper.group_parameters(None, [["a"], ["b"]], momentums=[0.1]), TypeError,
     "len(momentums) must match len(patterns_list)"),
    ("groups-weight-decays", lambda: helper.group_parameters(None, [["a"], ["b"]], weight_decays=[0.1]), TypeError,
     "len(weight_decays) must match len(patterns_list)"),
    # utils/reduce_amax.py
    ("reduce-too-many-axes", lambda: reduce_amax(torch.ones(2, 2), axis=(0, 1, 2)), ValueError,
     "Cannot reduce more axes than tensor's dim."),
]


@pytest.mark.parametrize("call, error, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_error_class_and_message_start_as_in_2_2_1(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error  # the same class, not a subclass
    assert str(info.value).startswith(message), str(info.value)


def test_calibrator_base_methods_are_abstract():
    base = calib.calibrator._Calibrator(8, None, False)  # pylint: disable=protected-access
    for call in (lambda: base.collect(torch.ones(1)), base.reset, base.compute_amax):
        with pytest.raises(NotImplementedError):
            call()
