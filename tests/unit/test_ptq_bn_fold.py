"""fold_batchnorm: outputs unchanged (eval mode), BNs replaced, both pairing rules, skip."""
import warnings

import pytest
import torch
from torch import nn

from pytorch_quantization.ptq import calibrate, fold_batchnorm, quantize_model


def _randomize_bn(model, seed=0):
    """Give every BN non-trivial statistics and affine parameters so that folding is actually exercised."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(n, generator=gen))
                m.bias.data.copy_(torch.randn(n, generator=gen))
    return model


class PillarFeatureNet(nn.Module):
    """Linear then BN1d over the channel axis reached through a permute, as CenterPoint's PFN layer does."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(9, 16, bias=False)
        self.norm = nn.BatchNorm1d(16)

    def forward(self, x):  # x: [pillars, points, 9]
        y = self.linear(x)
        y = self.norm(y.permute(0, 2, 1).contiguous()).permute(0, 2, 1)
        return torch.relu(y).max(dim=1).values


class ConvModuleLike(nn.Module):
    """conv / norm / act held as attributes (not a Sequential), like mmcv's ConvModule."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2, groups=2)
        self.up_bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.up_bn(self.up(torch.relu(self.bn(self.conv(x)))))


def _seq_model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, affine=False), nn.ReLU(),
        nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
    )


def test_sequential_rule_folds_and_keeps_outputs():
    torch.manual_seed(0)
    model = _randomize_bn(_seq_model()).eval()
    x = torch.randn(2, 3, 8, 8)
    ref = model(x)
    table = fold_batchnorm(model)
    assert table.column("status") == ["folded"] * 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def test_trace_rule_conv_module_and_grouped_transpose():
    torch.manual_seed(1)
    model = _randomize_bn(ConvModuleLike()).eval()
    x = torch.randn(2, 3, 6, 6)
    ref = model(x)
    assert len(fold_batchnorm(model)) == 0  # not a Sequential: the order-only rule finds nothing
    table = fold_batchnorm(model, x)
    assert sorted(table.column("batchnorm")) == ["bn", "up_bn"]
    assert isinstance(model.bn, nn.Identity) and isinstance(model.up_bn, nn.Identity)
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def test_trace_rule_linear_with_permuted_bn():
    torch.manual_seed(2)
    model = _randomize_bn(PillarFeatureNet()).eval()
    x = torch.randn(5, 7, 9)
    ref = model(x)
    table = fold_batchnorm(model, x)
    assert table.records() == [{"producer": "linear", "batchnorm": "norm", "status": "folded"}]
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def test_folded_weight_matches_closed_form():
    conv, bn = nn.Conv2d(2, 3, 1), _randomize_bn(nn.BatchNorm2d(3))
    model = nn.Sequential(conv, bn)
    w0, b0 = conv.weight.detach().clone(), conv.bias.detach().clone()
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    expect_b = (b0 - bn.running_mean) * s + bn.bias.detach()
    fold_batchnorm(model)
    torch.testing.assert_close(model[0].weight.detach(), w0 * s.reshape(3, 1, 1, 1))
    torch.testing.assert_close(model[0].bias.detach(), expect_b)


def test_skip_leaves_pair_and_training_mode_kept():
    model = _randomize_bn(_seq_model()).train()
    table = fold_batchnorm(model, skip="3")
    assert table.column("status")[1] == "left: skip pattern '3'"
    assert isinstance(model[4], nn.BatchNorm2d)
    assert model.training


def test_bad_model_type():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fold_batchnorm("not a model")


class SharedOutput(nn.Module):
    """``y = conv(x); return bn(y) + side(y)``: folding would change what ``side`` sees."""

    def __init__(self, side):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.side = side
        self.tail = nn.Conv2d(4, 4, 1)
        self.tail_bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        out = self.bn(y) + self.side(y)
        return self.tail_bn(self.tail(out))


class ConvModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.side = nn.Conv2d(4, 4, 1)

    def forward(self, y):
        return self.side(y)


@pytest.mark.parametrize("side", [ConvModule(), lambda y: y * 0.5, lambda y: torch.relu(y).mean(dim=1, keepdim=True)],
                         ids=["module", "functional", "reduction"])
def test_output_with_another_reader_is_left_with_a_warning(side):
    torch.manual_seed(4)
    model = SharedOutput(side)
    model = _randomize_bn(model).eval()
    x = torch.randn(2, 3, 6, 6)
    ref = model(x)
    with pytest.warns(UserWarning, match=r"left 1 pairs unfolded .* conv -> bn"):
        table = fold_batchnorm(model, x)
    assert table.records() == [
        {"producer": "tail", "batchnorm": "tail_bn", "status": "folded"},
        {"producer": "conv", "batchnorm": "bn", "status": "left: producer output also read by other layers or ops"}]
    assert isinstance(model.bn, nn.BatchNorm2d) and isinstance(model.tail_bn, nn.Identity)
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


class PermutedShared(nn.Module):
    """The pillar-feature-net pattern, but the permuted output is also used after the BN."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(5, 6)
        self.norm = nn.BatchNorm1d(6)

    def forward(self, x):
        z = self.linear(x).permute(0, 2, 1)
        return self.norm(z.contiguous()) - z


def test_layout_chain_with_another_reader_is_left():
    torch.manual_seed(5)
    model = _randomize_bn(PermutedShared()).eval()
    x = torch.randn(3, 4, 5)
    ref = model(x)
    with pytest.warns(UserWarning, match="linear -> norm"):
        table = fold_batchnorm(model, x)
    assert table.column("status") == ["left: producer output also read by other layers or ops"]
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)


class ConvOpBN(nn.Module):
    """``bn(op(conv(x)))``."""

    def __init__(self, op):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.op = op

    def forward(self, x):
        return self.bn(self.op(self.conv(x)))


def _metadata_then_noop(y):
    assert y.shape[1] == y.size(1) == 4 and y.dim() == 4
    return y.contiguous()  # already contiguous: returns y itself


@pytest.mark.parametrize("op, folds", [
    (_metadata_then_noop, True),  # shape reads and a no-op are not second readers
    (lambda y: y.mul_(2.0), False),  # an in-place change: the conv alone cannot absorb the BN any more
], ids=["metadata", "in_place"])
def test_metadata_reads_fold_and_in_place_changes_do_not(op, folds):
    torch.manual_seed(8)
    model = _randomize_bn(ConvOpBN(op)).eval()
    x = torch.randn(2, 3, 6, 6)
    ref = model(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = fold_batchnorm(model, x)
    assert table.column("status") == (["folded"] if folds else ["left: " + "producer output also read by other "
                                                                 "layers or ops"])
    assert [str(w.message).endswith("conv -> bn") for w in caught] == ([] if folds else [True])
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def _fake_quant(x, amax, bits=8):
    bound = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(x * (bound / amax)), -bound, bound) / (bound / amax)


@pytest.mark.parametrize("groups", [1, 2])
def test_fold_into_quantized_transposed_conv_matches_unfused_reference(groups):
    """BN folded into a per-channel quantized ConvTranspose2d: weight scaled along axis 1 (per output channel
    g * out/groups + j), weight amax refreshed per output channel, output = the fake-quantized folded conv."""
    torch.manual_seed(7)
    deconv, bn = nn.ConvTranspose2d(4, 6, 2, stride=2, groups=groups), nn.BatchNorm2d(6)
    model = _randomize_bn(nn.Sequential(deconv, bn)).eval()
    x = torch.randn(2, 4, 3, 3)
    unfused = model(x)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    w_ref = deconv.weight.detach().clone()
    per_group_in, per_group_out = 4 // groups, 6 // groups
    for out_channel in range(6):
        g, j = divmod(out_channel, per_group_out)
        w_ref[g * per_group_in:(g + 1) * per_group_in, j] *= scale[out_channel]
    b_ref = (deconv.bias.detach() - bn.running_mean) * scale + bn.bias.detach()
    torch.testing.assert_close(nn.functional.conv_transpose2d(x, w_ref, b_ref, stride=2, groups=groups), unfused,
                               rtol=1e-5, atol=1e-5)

    quantize_model(model, "w8")
    calibrate(model, [x])
    assert model[0].weight_quantizer.axis == 1
    assert fold_batchnorm(model).column("status") == ["folded"]
    torch.testing.assert_close(model[0].weight.detach(), w_ref, rtol=1e-6, atol=1e-7)
    amax_by_hand = torch.stack([w_ref[:, j].abs().max() for j in range(per_group_out)]).reshape(1, -1, 1, 1)
    torch.testing.assert_close(model[0].weight_quantizer.amax, amax_by_hand, rtol=1e-6, atol=0)
    expected = nn.functional.conv_transpose2d(x, _fake_quant(w_ref, amax_by_hand), b_ref, stride=2, groups=groups)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
