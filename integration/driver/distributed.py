"""torchrun set-up for the driver: the default process group (gloo on CPU, nccl on GPUs) and rank queries.

Done here rather than by a framework's helper (mmengine's ``init_dist`` selects a CUDA device unconditionally).
"""
import os

from integration.driver.errors import DriverError

__all__ = ["check_launcher_env", "init_distributed", "is_distributed", "rank", "world_size", "finish"]

_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def check_launcher_env(launcher, framework, single_node_only):
    """``--launcher pytorch`` needs the variables torchrun sets (say how to start it otherwise); a framework that
    evaluates on every node's local rank 0 must run on one node."""
    if launcher == "none":
        return
    missing = [k for k in _TORCHRUN_VARS if k not in os.environ]
    if missing:
        raise DriverError(f"--launcher pytorch: {', '.join(missing)} not set; start the driver with torchrun "
                          f"(python -m torch.distributed.run --nproc_per_node N integration/centerpoint_ptq.py ...)")
    if single_node_only and os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]) != os.environ["WORLD_SIZE"]:
        raise DriverError(f"--launcher pytorch: --framework {framework} runs on one node only (its evaluation runs "
                          f"on every process whose LOCAL_RANK is 0)")


def init_distributed(launcher, device):
    """torchrun's environment -> the default process group; nothing for ``launcher == "none"``."""
    if launcher == "none":
        return
    import torch
    import torch.distributed as dist
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")


def is_distributed():
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def rank():
    """This process's rank (0 without a process group; torchrun's RANK before it is made)."""
    if is_distributed():
        import torch.distributed as dist
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def world_size():
    if is_distributed():
        import torch.distributed as dist
        return dist.get_world_size()
    return 1


def finish():
    """Destroy the process group if one was made."""
    if is_distributed():
        import torch.distributed as dist
        dist.destroy_process_group()
