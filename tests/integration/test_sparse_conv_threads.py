"""The driver runs models with spconv layers on one CPU thread (spconv 2.3's CPU convolution races on more)."""
import pytest
import torch

from integration.driver.pipeline import one_thread_for_sparse_convs
from pytorch_quantization.utils.threads import intra_op_threads

spconv = pytest.importorskip("spconv.pytorch", reason="needs spconv (pip install spconv)")


@pytest.fixture
def two_threads():
    with intra_op_threads(2):
        yield


@pytest.mark.parametrize("sparse,device,expected", [(True, "cpu", 1), (False, "cpu", 2), (True, "cuda", 2)])
def test_one_thread_only_for_sparse_models_on_cpu(two_threads, capsys, sparse, device, expected):
    layer = spconv.SubMConv3d(4, 4, 3) if sparse else torch.nn.Conv3d(4, 4, 3)
    one_thread_for_sparse_convs(torch.nn.Sequential(torch.nn.Linear(2, 2), layer), device)
    assert torch.get_num_threads() == expected
    out = capsys.readouterr().out
    assert ("not thread-safe: using 1 intra-op thread instead of 2" in out) == (expected == 1)
