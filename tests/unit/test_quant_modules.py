"""quant_modules: monkey patching of torch.nn, its exact reversal, quant_act default and enable_onnx_export."""
import pytest
import torch

from pytorch_quantization import nn as quant_nn
from pytorch_quantization import quant_modules

PATCHED = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear", "LSTM",
           "LSTMCell", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
           "AdaptiveAvgPool3d"]


@pytest.fixture(name="originals")
def fixture_originals():
    saved = {name: getattr(torch.nn, name) for name in PATCHED}
    yield saved
    quant_modules.deactivate()
    for name, cls in saved.items():
        setattr(torch.nn, name, cls)


def test_initialize_replaces_and_deactivate_restores(originals):
    quant_modules.initialize()
    for name in PATCHED:
        assert getattr(torch.nn, name) is getattr(quant_nn, "Quant" + name)
    assert isinstance(torch.nn.Conv2d(1, 1, 1), quant_nn.QuantConv2d)
    quant_modules.deactivate()
    for name in PATCHED:
        assert getattr(torch.nn, name) is originals[name]


def test_initialize_twice_then_deactivate_restores_originals(originals):
    quant_modules.initialize()
    quant_modules.initialize(float_module_list=["Linear"])
    assert torch.nn.Linear is originals["Linear"]
    assert torch.nn.Conv2d is quant_nn.QuantConv2d
    quant_modules.deactivate()
    quant_modules.deactivate()
    for name in PATCHED:
        assert getattr(torch.nn, name) is originals[name]


def test_deactivate_without_initialize_is_a_no_op(originals):
    quant_modules.deactivate()
    for name in PATCHED:
        assert getattr(torch.nn, name) is originals[name]


def test_custom_quant_modules(originals):
    class Holder:  # pylint: disable=too-few-public-methods
        Block = torch.nn.Linear

    quant_modules.initialize(custom_quant_modules=[(Holder, "Block", quant_nn.QuantLinear)])
    assert Holder.Block is quant_nn.QuantLinear
    quant_modules.deactivate()
    assert Holder.Block is originals["Linear"]


def test_initialize_quant_act_false_is_default_only_while_active(originals):
    quant_modules.initialize(quant_act=False)
    conv = torch.nn.Conv2d(2, 2, 1)
    pool = torch.nn.AvgPool2d(2)
    explicit = quant_nn.QuantLinear(2, 2, quant_act=True)
    quant_modules.deactivate()
    assert conv.quant_act is False and pool.quant_act is False and explicit.quant_act is True
    assert quant_nn.QuantConv2d(2, 2, 1).quant_act is True
    # the input is not quantized: with its weight quantizer off the module computes the float conv exactly
    x = torch.randn(1, 2, 3, 3)
    float_conv = originals["Conv2d"](2, 2, 1)
    float_conv.load_state_dict({k: v for k, v in conv.state_dict().items() if k in ("weight", "bias")})
    conv.weight_quantizer.disable()
    torch.testing.assert_close(conv(x), float_conv(x), rtol=0, atol=0)


def test_bad_arguments(originals):
    with pytest.raises(TypeError, match="quant_act"):
        quant_modules.initialize(quant_act="yes")
    with pytest.raises(ValueError, match="BatchNorm2d"):
        quant_modules.initialize(float_module_list=["BatchNorm2d"])
    with pytest.raises(ValueError, match="custom_quant_modules"):
        quant_modules.initialize(custom_quant_modules=[(torch.nn, "NoSuchLayer", quant_nn.QuantLinear)])
    for name in PATCHED:
        assert getattr(torch.nn, name) is originals[name]


def test_enable_onnx_export_restores_flag_when_body_raises():
    assert quant_nn.TensorQuantizer._enable_onnx_export is False  # pylint: disable=protected-access
    with pytest.raises(RuntimeError, match="boom"):
        with quant_modules.enable_onnx_export():
            assert quant_nn.TensorQuantizer._enable_onnx_export is True  # pylint: disable=protected-access
            raise RuntimeError("boom")
    assert quant_nn.TensorQuantizer._enable_onnx_export is False  # pylint: disable=protected-access


def test_enable_onnx_export_requires_static_amax():
    quantizer = quant_nn.TensorQuantizer()
    with quant_modules.enable_onnx_export():
        with pytest.raises(RuntimeError, match="load_calib_amax"):
            quantizer(torch.ones(2))
    assert quantizer(torch.ones(2)).tolist() == [1.0, 1.0]
