"""ptq.reconstruct on spconv layers: learned rounding of SubMConv3d / SparseConv3d / SparseInverseConv3d lowers the
error on the active sites, and the sparse loss never sees inactive sites."""
import copy

import pytest
import torch
from torch import nn

from pytorch_quantization import ptq
from pytorch_quantization.ptq.reconstruct import output_loss

spconv = pytest.importorskip("spconv.pytorch", reason="spconv is not installed (optional sparse-conv support)")


def _sparse_input(gen, spatial=(12, 12, 12), sites=150, channels=4, batch=2):
    coords = torch.stack([torch.randint(0, s, (batch * sites,), generator=gen) for s in spatial], dim=1)
    coords = torch.cat([torch.arange(batch).repeat_interleave(sites)[:, None], coords], dim=1)
    coords = torch.unique(coords, dim=0).int()
    # correlated channels: white inputs would make round-to-nearest optimal already
    base = torch.randn(coords.shape[0], 1, generator=gen)
    features = base * torch.linspace(0.5, 1.5, channels) + 0.2 * torch.randn(coords.shape[0], channels, generator=gen)
    return spconv.SparseConvTensor(features, coords, list(spatial), batch)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.subm = spconv.SubMConv3d(4, 8, 3, indice_key="subm1", bias=False)
        self.down = spconv.SparseConv3d(8, 8, 3, stride=2, padding=1, indice_key="down", bias=False)
        self.up = spconv.SparseInverseConv3d(8, 4, 3, indice_key="down", bias=False)

    def forward(self, x):
        return self.up(self.down(self.subm(x)))


def _feature_mse(model, float_model, data):
    with torch.no_grad():
        return sum(float(((model(x).features - float_model(x).features) ** 2).mean()) for x in data) / len(data)


def test_sparse_layers_beat_round_to_nearest():
    torch.set_num_threads(1)  # spconv's CPU kernels are only reproducible single-threaded
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = _Net()
    data = [_sparse_input(gen) for _ in range(3)]
    float_model = copy.deepcopy(model)
    ptq.quantize_model(model, "w4")
    ptq.calibrate(model, data)
    rtn = _feature_mse(model, float_model, data)
    table = ptq.reconstruct(model, float_model, data, iters=150, progress=False)
    assert table.column("block") == ["subm", "down", "up"]
    assert table.column("status") == ["learned"] * 3
    assert _feature_mse(model, float_model, data) < 0.9 * rtn
    for layer in (model.subm, model.down, model.up):
        assert torch.equal(layer._weight_quantizer(layer.weight), layer.weight)


def test_sparse_loss_counts_active_sites_only():
    gen = torch.Generator().manual_seed(1)
    ref = _sparse_input(gen, spatial=(8, 8, 8), sites=40)
    out = ref.replace_feature(ref.features + 0.1 * torch.randn(ref.features.shape, generator=gen))
    expected = float(((out.features - ref.features) ** 2).sum() / (ref.features ** 2).sum())
    assert float(output_loss(out, ref)) == pytest.approx(expected, rel=1e-6)
    # the same active sites in a grid with eight times more (inactive) sites: the sparse loss is unchanged, while a
    # loss on the dense grid would change with the empty space
    big_ref = spconv.SparseConvTensor(ref.features, ref.indices, [16, 16, 16], ref.batch_size)
    big_out = big_ref.replace_feature(out.features)
    assert float(output_loss(big_out, big_ref)) == float(output_loss(out, ref))
    dense_small = float(((out.dense() - ref.dense()) ** 2).mean())
    dense_big = float(((big_out.dense() - big_ref.dense()) ** 2).mean())
    assert dense_big < dense_small / 4
    fewer = spconv.SparseConvTensor(ref.features[:-1], ref.indices[:-1], ref.spatial_shape, ref.batch_size)
    with pytest.raises(ValueError, match="other active sites"):
        output_loss(fewer, ref)
