"""fold_batchnorm: outputs unchanged (eval mode), BNs replaced, both pairing rules, skip."""
import pytest
import torch
from torch import nn

from pytorch_quantization.ptq import fold_batchnorm


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
