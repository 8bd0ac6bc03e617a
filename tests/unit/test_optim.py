"""Tests of pytorch_quantization.optim.helper."""
import numpy as np
import pytest
import torch

from pytorch_quantization.optim import helper


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Flatten(),
                               torch.nn.Linear(12, 2))


def test_match_parameters_by_regex_each_once():
    model = _model()
    matched = list(helper.match_parameters(model, [r"^0\.", "weight"]))
    named = dict(model.named_parameters())
    expected = [p for n, p in named.items() if n.startswith("0.") or "weight" in n]
    assert [id(p) for p in matched] == [id(p) for p in expected]  # conv weight matches both patterns: once


def test_group_parameters_builds_optimizer_groups():
    model = _model()
    groups = helper.group_parameters(model, [[r"^0\."], [r"^3\."]], lrs=[0.1, 0.01], momentums=[0.9, 0.8],
                                     weight_decays=[1e-4, 0.0])
    assert [len(g["params"]) for g in groups] == [2, 2]
    assert [(g["lr"], g["momentum"], g["weight_decay"]) for g in groups] == [(0.1, 0.9, 1e-4), (0.01, 0.8, 0.0)]
    optimizer = torch.optim.SGD(groups, lr=1.0)
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.01]
    without_options = helper.group_parameters(model, [["bias"]])
    assert set(without_options[0]) == {"params"}


def test_group_parameters_errors():
    model = _model()
    with pytest.raises(TypeError, match="^patterns_list must be list of list of patterns"):
        helper.group_parameters(model, "weight")
    with pytest.raises(TypeError, match="^patterns_list must be list of list of patterns"):
        helper.group_parameters(model, ["weight"])
    for key in ("lrs", "momentums", "weight_decays"):
        with pytest.raises(TypeError, match=f"^len\\({key}\\) must match len\\(patterns_list\\)"):
            helper.group_parameters(None, [["a"], ["b"]], **{key: [0.1]})  # checked before the model is read


def test_freeze_parameters():
    model = _model()
    helper.freeze_parameters(model, ["bias"])
    for name, param in model.named_parameters():
        assert param.requires_grad == ("bias" not in name)
    with pytest.raises(TypeError, match="wrap a single pattern"):
        helper.freeze_parameters(model, "bias")


class _FixedRangeQuantizer(torch.nn.Module):
    """A fake weight quantizer with a known amax (what quant_weight_inplace calls)."""

    fake_quant = True

    def __init__(self, amax):
        super().__init__()
        self.amax = amax

    def forward(self, x):
        scale = 127 / self.amax
        return torch.clamp(torch.round(x * scale), -127, 127) / scale


def test_quant_weight_inplace_with_stand_in_module():
    model = _model()
    model[3]._weight_quantizer = _FixedRangeQuantizer(0.25)
    before_linear = model[3].weight.detach().numpy().copy()
    before_conv = model[0].weight.detach().clone()
    helper.quant_weight_inplace(model)
    scale = 127 / 0.25
    expected = np.clip(np.round(before_linear.astype(np.float64) * scale), -127, 127) / scale
    np.testing.assert_allclose(model[3].weight.detach().numpy(), expected, rtol=0, atol=1e-7)
    assert torch.equal(model[0].weight, before_conv)  # no quantizer: untouched


def test_quant_weight_inplace_with_package_quant_linear():
    try:
        from pytorch_quantization.nn import QuantLinear  # pylint: disable=import-outside-toplevel
        from pytorch_quantization.tensor_quant import QuantDescriptor  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        pytest.skip(f"pytorch_quantization.nn.QuantLinear not importable yet: {error}")
    torch.manual_seed(1)
    layer = QuantLinear(8, 4, quant_desc_weight=QuantDescriptor(num_bits=8, amax=0.5))
    weight = layer.weight.detach().numpy().astype(np.float64)
    helper.quant_weight_inplace(torch.nn.Sequential(layer))
    scale = 127 / 0.5
    expected = np.clip(np.round(weight * scale), -128, 127) / scale
    np.testing.assert_allclose(layer.weight.detach().numpy(), expected, rtol=0, atol=1e-7)
