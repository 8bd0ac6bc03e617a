"""cuda_calls_to (OpenPCDet's hard-coded .cuda() mapped to the chosen device) and the spconv eval-mode bias
helper, on CPU."""
import pytest
import torch

from integration.backends.openpcdet.compat.device import cuda_calls_to, model_device


def test_cuda_calls_go_to_cpu_inside_and_are_restored():
    had_own = "cuda" in torch.Tensor.__dict__
    with cuda_calls_to("cpu"):
        moved = torch.arange(3.0).cuda()
        assert moved.device.type == "cpu" and moved.tolist() == [0.0, 1.0, 2.0]
        assert torch.ones(2).cuda(0, non_blocking=True).device.type == "cpu"
    assert ("cuda" in torch.Tensor.__dict__) == had_own


def test_cuda_calls_restored_after_an_error():
    original = torch.Tensor.cuda
    with pytest.raises(KeyError):
        with cuda_calls_to("cpu"):
            raise KeyError("boom")
    assert torch.Tensor.cuda is original


def test_model_device():
    assert model_device(torch.nn.Linear(2, 2)).type == "cpu"
    assert model_device(torch.nn.ReLU()).type == "cpu"


def test_float_sparse_conv_with_bias_runs_on_cpu_in_eval_mode():
    spconv = pytest.importorskip("spconv.pytorch", reason="spconv is needed for sparse convolutions")
    from pytorch_quantization.ptq.plugins.spconv import bias_after_sparse_conv
    torch.manual_seed(0)
    conv = spconv.SubMConv3d(4, 6, 3, bias=True, indice_key="k").eval()
    with torch.no_grad():
        conv.bias.uniform_(-1, 1)
    coords = torch.unique(torch.randint(0, 8, (40, 3)), dim=0)
    indices = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords.int()], dim=1)
    x = spconv.SparseConvTensor(torch.randn(len(coords), 4), indices, [8, 8, 8], 1)
    with torch.no_grad():
        with pytest.raises(AssertionError, match="bias"):
            conv(x)  # what spconv does on its own
        with bias_after_sparse_conv(conv):
            got = conv(x).features
        bias = conv.bias
        conv.bias = None
        want = conv(x).features + bias  # reference: bias-free convolution, bias added by hand
        conv.bias = bias
    assert torch.allclose(got, want, atol=1e-5)
    assert conv.bias is bias and not conv._forward_hooks and not conv._forward_pre_hooks
