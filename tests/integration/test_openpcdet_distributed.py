"""``--framework openpcdet --launcher pytorch``: OpenPCDet's distributed test path on CPU (gloo).

Without OpenPCDet: the CPU-safe DDP wrapping (``pcdet_compat.dist_eval.ddp_on_cpu``) on an imitation of
``eval_one_epoch``'s wrapping line in two real gloo processes, frame selection on a distributed sampler,
per-frame seeding (``pcdet_compat.frame_seed``) and the launcher checks. With OpenPCDet importable (its
source tree on PYTHONPATH; on no package registry, so CI skips that test): the real ``eval_one_epoch``
with ``dist_test=True`` over two processes gathers exactly the detections one process makes.
"""
import os
import socket
import textwrap
import types

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler

from conftest import requires_pcdet
from integration.backends.openpcdet.compat.dist_eval import ddp_on_cpu, keep_frames, unpadded_shard_size
from integration.backends.openpcdet.compat.frame_seed import frame_seed, seed_frames

needs_dist = pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")

# What OpenPCDet's eval_one_epoch does with dist_test=True before its loop (imitated, not copied).
WRAPPING = textwrap.dedent("""
    def wrap(model, local_rank):
        gpus = torch.cuda.device_count()
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank % gpus],
                                                         broadcast_buffers=False)
""")


def _eval_utils_like():
    module = types.ModuleType("eval_utils_like")
    module.torch = torch
    exec(WRAPPING, module.__dict__)  # pylint: disable=exec-used
    return module


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(rank, world, port):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _ddp_worker(rank, world, port, out_dir):
    _start(rank, world, port)
    try:
        module = _eval_utils_like()
        torch.manual_seed(rank)  # different weights per rank: DDP must broadcast rank 0's
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        with ddp_on_cpu(module, "cpu"):
            wrapped = module.wrap(model, local_rank=rank)
        restored = module.torch is torch
        x = torch.arange(6, dtype=torch.float32).view(2, 3)
        with torch.no_grad():
            out = wrapped(x)
        torch.save({"type": type(wrapped).__name__, "restored": restored, "out": out,
                    "state": {k: v.clone() for k, v in model.state_dict().items()}},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@needs_dist
def test_ddp_on_cpu_gives_eval_one_epochs_wrapping_a_working_ddp(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    expected = reference(torch.arange(6, dtype=torch.float32).view(2, 3)).detach()
    for got in ranks:
        assert got["type"] == "DistributedDataParallel" and got["restored"]
        for key, value in reference.state_dict().items():  # rank 1 got rank 0's weights from DDP
            assert torch.equal(got["state"][key], value)
        assert torch.equal(got["out"], expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure that only happens without a GPU")
def test_without_the_patch_the_wrapping_fails_on_cpu():
    with pytest.raises(ZeroDivisionError):
        _eval_utils_like().wrap(torch.nn.Linear(2, 2), local_rank=0)


def test_ddp_on_cpu_leaves_cuda_runs_to_openpcdet():
    module = _eval_utils_like()
    with ddp_on_cpu(module, "cuda"):
        assert module.torch is torch
    with ddp_on_cpu(module, torch.device("cpu")):
        assert module.torch is not torch and module.torch.cuda.device_count() == 1
        assert module.torch.no_grad is torch.no_grad  # everything else falls through to torch
    assert module.torch is torch


class _Frames(torch.utils.data.Dataset):
    """An OpenPCDet-like dataset: ``infos`` list, item = the info's id."""

    def __init__(self, count):
        self.infos = [{"token": f"t{i}"} for i in range(count)]

    def __len__(self):
        return len(self.infos)

    def __getitem__(self, index):
        return self.infos[index]["token"]


@pytest.mark.parametrize("world,kept", [(2, [5, 1, 3]), (3, [0, 2, 4, 6, 8]), (2, [7, 0])])
def test_kept_frames_are_sharded_once_each_without_padding(world, kept):
    seen = []
    for rank in range(world):
        dataset = _Frames(9)
        loader = keep_frames(DataLoader(dataset, batch_size=None, sampler=DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=False)), kept)
        items = list(loader)
        assert len(items) == -(-len(kept) // world)  # every rank the same length, padding included
        seen += items[:unpadded_shard_size(loader)]
    assert sorted(seen) == sorted(f"t{i}" for i in kept)


def test_without_a_distributed_sampler_every_kept_frame_is_own():
    loader = keep_frames(DataLoader(_Frames(6), batch_size=None), [4, 2])
    assert list(loader) == ["t4", "t2"] and unpadded_shard_size(loader) == 2


class _ShuffledFrames(_Frames):
    """Uses the global numpy RNG while preparing a frame, as OpenPCDet's sweeps / shuffle_points do."""

    def __getitem__(self, index):
        return self.infos[index]["token"], np.random.permutation(100)


def test_seeded_frames_do_not_depend_on_history_and_keep_the_global_rng():
    dataset = seed_frames(_ShuffledFrames(3))
    assert isinstance(dataset, _ShuffledFrames) and type(dataset).__name__ == "_ShuffledFrames"
    assert seed_frames(dataset) is dataset and type(dataset).__mro__[1] is _ShuffledFrames  # not wrapped twice
    np.random.seed(1)
    first = dataset[1][1]
    state = np.random.get_state()
    np.random.rand(7)  # other draws in between
    again = dataset[1][1]
    assert np.array_equal(first, again)
    np.random.seed(1)
    assert np.array_equal(np.random.get_state()[1], state[1])  # frame loading consumed nothing globally
    expected = np.random.RandomState(frame_seed({"token": "t1"}, 1)).permutation(100)
    assert np.array_equal(first, expected)
    assert not np.array_equal(dataset[0][1], first)


def test_frame_seed_prefers_token_then_lidar_path_then_index():
    assert frame_seed({"token": "a", "lidar_path": "b"}, 3) == frame_seed({"token": "a"}, 9)
    assert frame_seed({"lidar_path": "b"}, 3) == frame_seed({"lidar_path": "b"}, 4)
    assert frame_seed({}, 3) == frame_seed(None, 3) != frame_seed(None, 4)


def _driver_error(capsys, tmp_path, monkeypatch, env):
    from integration import centerpoint_ptq
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    checkpoint = tmp_path / "ckpt.pth"
    checkpoint.write_bytes(b"")
    code = centerpoint_ptq.main(["--framework", "openpcdet", "--config", "cfg.yaml", "--checkpoint", str(checkpoint),
                                 "--data-root", str(tmp_path), "--launcher", "pytorch",
                                 "--work-dir", str(tmp_path / "work")])
    assert code == 2
    return capsys.readouterr().err


def test_launcher_pytorch_outside_torchrun_says_how_to_start_it(capsys, tmp_path, monkeypatch):
    err = _driver_error(capsys, tmp_path, monkeypatch, {})
    assert "--launcher pytorch" in err and "torchrun" in err and "RANK" in err


def test_launcher_pytorch_over_several_nodes_is_refused(capsys, tmp_path, monkeypatch):
    err = _driver_error(capsys, tmp_path, monkeypatch,
                        {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    assert "one node only" in err
    assert not (tmp_path / "work").exists()


# ---- the real OpenPCDet eval_one_epoch -------------------------------------------------------------------

class _PillarFrames(torch.utils.data.Dataset):
    """Random pillar frames for the small CenterPoint of test_openpcdet_pcdet; detections kept as they come."""

    def __init__(self, class_names, count):
        self.class_names = class_names
        self.infos = [{"token": f"frame{i}"} for i in range(count)]

    def __len__(self):
        return len(self.infos)

    def __getitem__(self, index):
        from test_openpcdet_pcdet import pillar_batch  # pylint: disable=import-outside-toplevel
        return dict(pillar_batch(index), frame_id=np.array([self.infos[index]["token"]]))

    @staticmethod
    def collate_batch(items):
        return items[0]

    def generate_prediction_dicts(self, batch_dict, pred_dicts, class_names, output_path=None):
        return [{"frame_id": str(batch_dict["frame_id"][0]), "name": pred["pred_labels"].numpy(),
                 "score": pred["pred_scores"].numpy(), "boxes": pred["pred_boxes"].numpy()} for pred in pred_dicts]

    def evaluation(self, det_annos, class_names, **kwargs):
        return "", {"annos": det_annos}


def _pcdet_eval(rank, world, out_dir, frames):
    """eval_one_epoch of the small pillar CenterPoint over ``frames`` frames (dist_test when world > 1)."""
    from pathlib import Path
    from test_openpcdet_pcdet import small_dataset  # pylint: disable=import-outside-toplevel
    from integration.backends.openpcdet import backend
    from integration.backends.openpcdet import config as pcdet_config
    from integration.backends.openpcdet.compat.device import cuda_calls_to
    root, _, _ = backend.import_stack()
    from pcdet.datasets import DistributedSampler as PcdetSampler  # after import_stack's placeholders
    cfg = pcdet_config.load_config("tools/cfgs/waymo_models/centerpoint_pillar_1x.yaml", root)
    cfg.LOCAL_RANK = rank
    torch.manual_seed(0)
    model = backend.build_model(cfg, small_dataset(cfg), "cpu")
    dataset = _PillarFrames(cfg.CLASS_NAMES, frames)
    sampler = PcdetSampler(dataset, world, rank, shuffle=False) if world > 1 else None
    loader = DataLoader(dataset, batch_size=1, collate_fn=dataset.collate_batch, sampler=sampler)
    eval_utils = backend.import_eval_utils(root)
    result_dir = Path(out_dir) / "eval"
    with cuda_calls_to("cpu"), ddp_on_cpu(eval_utils, "cpu"):
        result = eval_utils.eval_one_epoch(cfg, types.SimpleNamespace(save_to_file=False, infer_time=False), model,
                                           loader, epoch_id="t", logger=backend.make_logger(out_dir, rank),
                                           dist_test=world > 1, result_dir=result_dir)
    return result.get("annos"), (result_dir / "tmpdir").exists()


def _pcdet_worker(rank, world, port, out_dir, frames):
    _start(rank, world, port)
    try:
        torch.save(_pcdet_eval(rank, world, out_dir, frames), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@needs_dist
@requires_pcdet
def test_real_eval_one_epoch_over_two_cpu_processes_gathers_one_process_detections(tmp_path):
    frames = 3  # odd: the sampler pads rank 1 with frame 0, which the gathering must drop
    single, _ = _pcdet_eval(0, 1, str(tmp_path / "single"), frames)
    mp.spawn(_pcdet_worker, args=(2, _free_port(), str(tmp_path / "dist"), frames), nprocs=2, join=True)
    (gathered, tmp_left), (other, _) = [torch.load(tmp_path / "dist" / f"rank{r}.pt", weights_only=False)
                                        for r in range(2)]
    assert other is None  # only rank 0 evaluates
    assert not tmp_left  # merge_results_dist cleaned its tmpdir (inside the result dir)
    assert [a["frame_id"] for a in gathered] == [f"frame{i}" for i in range(frames)]
    assert [a["frame_id"] for a in single] == [f"frame{i}" for i in range(frames)]
    for got, want in zip(gathered, single):
        assert len(want["score"]) > 0
        for key in ("name", "score", "boxes"):
            assert np.array_equal(got[key], want[key])
