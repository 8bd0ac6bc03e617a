"""Distributed calibration: two gloo ranks on CPU, each seeing half the data, get exactly the amaxes that one
process seeing all the data gets."""
import os
import socket

import pytest
import torch
from torch import nn
import torch.distributed as dist
import torch.multiprocessing as mp

from pytorch_quantization.ptq import calibrate, quantize_model

METHODS = ("max", "percentile", "mse")


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    quantize_model(model, "w8a8")
    return model


def _data():
    gen = torch.Generator().manual_seed(1)
    # batches of different scales so that each rank's own range differs from the global one
    return [torch.randn(2, 2, 8, 8, generator=gen) * (1 + 3 * i) for i in range(4)]


def _amaxes(model):
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith("_amax")}


def _worker(rank, world, port, out_dir):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for method in METHODS:
            model = _model()
            calibrate(model, _data()[rank::world], method=method, skip_zeros=True)
            results[method] = _amaxes(model)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")
def test_two_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for method in METHODS:
        single = _model()
        calibrate(single, _data(), method=method, skip_zeros=True)
        expected = _amaxes(single)
        for rank, result in enumerate(ranks):
            got = result[method]
            assert got.keys() == expected.keys()
            for key in expected:
                assert torch.equal(got[key], expected[key]), (method, rank, key)
    # the halves alone would disagree with the whole: the reduction is what makes them equal
    half = _model()
    calibrate(half, _data()[0::2], method="max")
    assert not torch.equal(_amaxes(half)["0._input_quantizer._amax"], ranks[0]["max"]["0._input_quantizer._amax"])
