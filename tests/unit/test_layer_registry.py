"""layer_registry + utils.channel_axis: one table and one output-channel-axis rule, read by quant_modules,
quantize_model, fold_batchnorm, calib.calibrate_weights and calibration files."""
import json

import torch
from torch import nn

from pytorch_quantization import calib, layer_registry, quant_modules
from pytorch_quantization import nn as quant_nn
from pytorch_quantization.nn.modules._utils import WeightedQuantModule
from pytorch_quantization.ptq import (calibrate, fold_batchnorm, load_calibration, quantize_model,
                                      save_calibration)
from pytorch_quantization.utils.channel_axis import out_channel_axis, out_channels, register_out_channel_axis


class ColumnLinear(nn.Module):
    """``y = x @ weight + bias`` with weight ``[in, out]``: output channels on weight axis 1."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out))
        self.bias = nn.Parameter(torch.randn(n_out))

    def forward(self, x):
        return x @ self.weight + self.bias


class QuantColumnLinear(WeightedQuantModule, ColumnLinear):

    def forward(self, x):  # pylint: disable=arguments-differ
        inp, weight = self._quant(x)
        return inp @ weight + self.bias


layer_registry.register(ColumnLinear, QuantColumnLinear)
register_out_channel_axis(ColumnLinear, 1)


def test_builtin_axes():
    assert out_channel_axis(nn.Conv2d(4, 6, 3)) == 0 and out_channel_axis(nn.Linear(4, 6)) == 0
    deconv = nn.ConvTranspose2d(4, 6, 3, groups=2)  # weight [4, 3, 3, 3]
    assert out_channel_axis(deconv) == 1 and out_channels(deconv) == 6
    assert out_channel_axis(quant_nn.QuantConvTranspose1d(4, 6, 3)) == 1


def test_quant_modules_patches_the_builtin_entries_only():
    """Plugin entries (such as ColumnLinear above) are for quantize_model; initialize() patches torch.nn only."""
    patched = {e.mod_name: e.replace_mod for e in quant_modules._DEFAULT_QUANT_MAP}  # pylint: disable=W0212
    assert patched == {e.float_cls.__name__: e.quant_cls for e in layer_registry.builtin_entries()}
    assert "ColumnLinear" not in patched and patched["ConvTranspose2d"] is quant_nn.QuantConvTranspose2d
    assert len(patched) == 15


def test_registered_layer_and_axis_reach_every_consumer(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(ColumnLinear(5, 3), nn.BatchNorm1d(3)).eval()
    bn = model[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(8, 5)
    ref = model(x)
    assert fold_batchnorm(model).column("status") == ["folded"]  # the registry names the producer
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)  # scaled along axis 1

    summary = quantize_model(model, "w8")
    layer = model[0]
    assert isinstance(layer, QuantColumnLinear) and summary.swapped == ["0"]
    assert layer.weight_quantizer.axis == 1  # the preset's "per output channel" went to axis 1
    calibrate(model, [x])
    by_hand = torch.stack([layer.weight[:, j].abs().max() for j in range(3)]).reshape(1, 3)
    assert torch.equal(layer.weight_quantizer.amax, by_hand.detach())

    layer.weight_quantizer.reset_amax()
    calib.calibrate_weights(model, method="max")
    assert torch.equal(layer.weight_quantizer.amax, by_hand.detach())

    path = tmp_path / "calib.json"
    save_calibration(model, path)
    doc = json.loads(path.read_text())
    assert doc["quantizers"]["0._weight_quantizer"]["axis"] == 1
    assert doc["quantizers"]["0._weight_quantizer"]["shape"] == [1, 3]
    torch.manual_seed(0)
    other = nn.Sequential(ColumnLinear(5, 3))
    quantize_model(other, "w8")
    load_calibration(other, path, strict=False)
    assert torch.equal(other[0].weight_quantizer.amax, by_hand.detach())
