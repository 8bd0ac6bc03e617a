"""OpenPCDet side of the CenterPoint PTQ driver (``centerpoint_ptq.py --framework openpcdet``).

Built with OpenPCDet's own pieces: ``cfg_from_yaml_file``, ``build_dataloader``, ``build_network``,
``load_params_from_file`` and ``tools/eval_utils/eval_utils.eval_one_epoch`` (which calls the dataset's
``generate_prediction_dicts`` and ``evaluation``). ``OpenPCDetBackend`` implements
``integration.backends.base.Backend``; the driver's pipeline runs the modes.

``--device cpu`` needs no compiled OpenPCDet op: ``import_stack`` installs the placeholders of
``integration.backends.openpcdet.compat.placeholders`` before importing pcdet and the CPU NMS / scatter fallbacks
after; every build / forward runs inside ``cuda_calls_to(device)`` (the driver runs every forward inside
``ptq.plugins.spconv.bias_after_sparse_conv``: spconv's CPU kernels refuse a bias in eval mode). On CUDA the
original ops run.

Checkpoints: OpenPCDet's own (``model_state``), or a bare state_dict (given to ``load_params_from_file``
wrapped as ``{"model_state": ...}``).

``--launcher pytorch`` (under torchrun) goes through OpenPCDet's own distributed test path: the driver makes the
process group (gloo on CPU, nccl on CUDA), both loaders come from ``build_dataloader(dist=True)`` (each rank
calibrates on its shard; ``ptq.calibrate`` all-reduces the statistics, so every rank gets the amaxes one
process would), and ``eval_one_epoch(dist_test=True)`` gathers the detections with ``merge_results_dist``
(through ``<work_dir>/logs/<mode>/tmpdir``) and evaluates them on rank 0. On CPU
its DDP wrapping is made to work by ``compat.dist_eval.ddp_on_cpu``. ``--max-eval-frames N`` keeps the
first N val frames before they are sharded. ``cfg.LOCAL_RANK`` picks the evaluating process, as in
OpenPCDet's ``test.py``, so runs span one node only.
"""
import contextlib
import itertools
import logging
import os
import pickle
import sys
import time
import types

import numpy as np
import torch

from integration.backends.base import FrameTimes
from integration.backends.openpcdet import config as pcdet_config
from integration.backends.openpcdet.compat import placeholders
from integration.backends.openpcdet.compat.device import cuda_calls_to, model_device
from integration.backends.openpcdet.compat.dist_eval import ddp_on_cpu, keep_frames, unpadded_shard_size
from integration.backends.openpcdet.compat.frame_seed import seed_frames
from integration.backends.openpcdet.compat import waymo_eval
from integration.backends.openpcdet.metrics import summarize_nuscenes_summary, summarize_waymo
from integration.data.waymo import metric as waymo_metric
from integration.data.nuscenes_eval import ground_truth_limited_to
from integration.driver.errors import DriverError

__all__ = ["OpenPCDetBackend", "import_stack", "make_logger", "build_dataset", "build_model", "calibration_forward",
           "import_eval_utils"]


def import_stack(pcdet_root=None):
    """Import OpenPCDet (placeholders for what is not built) and install the CPU fallbacks.

    Returns ``(source tree, fallbacks installed, placeholder modules served)``.
    """
    root = pcdet_config.locate_pcdet(pcdet_root)
    placeholders.install()
    try:
        import pcdet.datasets  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        import pcdet.models  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as err:
        raise DriverError(f"OpenPCDet from {root} does not import: {err}; install its Python dependencies "
                          f"(see README.md, section 'CenterPoint PTQ through OpenPCDet')") from None
    from integration.backends.openpcdet.compat.fallbacks import install_cpu_fallbacks
    return root, install_cpu_fallbacks(), placeholders.served()


def make_logger(work_dir, rank=0):
    """OpenPCDet's datasets and evaluation log a lot at INFO: send it to ``<work_dir>/logs/openpcdet.log``
    (``openpcdet_rank<N>.log`` for the other ranks of a distributed run)."""
    logger = logging.getLogger("centerpoint_ptq.openpcdet")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    path = os.path.join(work_dir, "logs", "openpcdet.log" if rank == 0 else f"openpcdet_rank{rank}.log")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not any(getattr(h, "baseFilename", None) == path for h in logger.handlers):
        logger.addHandler(logging.FileHandler(path))
    return logger


def build_dataset(cfg, logger, calibration=False, dist=False):
    """``(dataset, loader)`` of the val split (``calibration``: the train split), test-time processing;
    ``dist``: the loader yields this rank's shard (OpenPCDet's ``DistributedSampler``). Frames are prepared
    reproducibly (``compat.frame_seed``)."""
    from pcdet.datasets import build_dataloader
    ds_cfg = pcdet_config.calibration_dataset_cfg(cfg.DATA_CONFIG) if calibration else cfg.DATA_CONFIG
    dataset, loader, _ = build_dataloader(dataset_cfg=ds_cfg, class_names=cfg.CLASS_NAMES, batch_size=1,
                                          dist=dist, workers=0, logger=logger, training=False)
    seed_frames(dataset)
    if len(dataset) == 0:
        split = "training" if calibration else "val"
        raise DriverError(f"--data-root: the {split} split of {cfg.DATA_CONFIG.DATA_PATH} has no frames")
    return dataset, loader


class _NotUpdated(logging.Handler):
    """Collects the keys ``load_params_from_file`` reports as not loaded."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.keys = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Not updated weight "):
            self.keys.append(message[len("Not updated weight "):].split(":")[0])


def build_model(cfg, dataset, device):
    """``build_network`` on ``device`` in eval mode (its ``.cuda()`` calls mapped to ``device``)."""
    from pcdet.models import build_network
    with cuda_calls_to(device):
        model = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset)
    return model.to(device).eval()


def _model_state_file(path, scratch_dir):
    """``path`` if it is an OpenPCDet checkpoint (``model_state``); a bare state_dict is written wrapped as
    ``{"model_state": ...}`` into ``scratch_dir`` and that file returned. One-line error for anything else."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise DriverError(f"--checkpoint: cannot read {path}: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if isinstance(obj, dict) and isinstance(obj.get("model_state"), dict):
        return path
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise DriverError(f"--checkpoint: {path} is neither an OpenPCDet checkpoint (a dict with 'model_state') nor "
                          f"a state_dict of tensors")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    os.makedirs(scratch_dir, exist_ok=True)
    wrapped = os.path.join(scratch_dir, "checkpoint_model_state.pth")
    torch.save({"model_state": state}, wrapped)
    return wrapped


def calibration_forward(model, batch):
    """Every module a quantizer sits in (VFE, 3D / BEV backbones, head convs), no box decoding or NMS.

    ``batch`` is a collated OpenPCDet batch (numpy); a copy is moved to the model's device.
    """
    from pcdet.models import load_data_to_gpu
    batch = dict(batch)
    with cuda_calls_to(model_device(model)):
        load_data_to_gpu(batch)
        for module in model.module_list:
            head = getattr(model, "dense_head", None)
            if module is head and hasattr(head, "shared_conv") and hasattr(head, "heads_list"):
                features = head.shared_conv(batch["spatial_features_2d"])
                return [branch(features) for branch in head.heads_list]
            batch = module(batch)
    return batch


class _FirstBatches:
    """The first ``count`` batches of ``loader`` (a rank's shard without the sampler's padding repeats)."""

    def __init__(self, loader, count):
        self.loader, self.count = loader, count

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.count)

    def __len__(self):
        return self.count


class _FrameTimer:
    """Seconds spent in the model's forward (forward pre-hook / hook), synchronised on CUDA."""

    def __init__(self, model):
        self.times, self._start = FrameTimes(), None
        self._handles = [model.register_forward_pre_hook(self._before), model.register_forward_hook(self._after)]

    @staticmethod
    def _sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _before(self, module, inputs):
        self._sync()
        self._start = time.perf_counter()

    def _after(self, module, inputs, output):
        self._sync()
        self.times.add(time.perf_counter() - self._start)

    def remove(self):
        for handle in self._handles:
            handle.remove()

    @property
    def ms_per_frame(self):
        return self.times.ms_per_frame


def import_eval_utils(pcdet_root):
    """OpenPCDet's ``tools/eval_utils/eval_utils`` module (``tools/`` is put on ``sys.path``)."""
    tools = os.path.join(pcdet_root, "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    from eval_utils import eval_utils  # pylint: disable=import-outside-toplevel
    return eval_utils


def summarize(cfg, result, output_dir):
    """Row values of one evaluation (``metric_columns``); see ``integration.backends.openpcdet.metrics``."""
    classes = list(cfg.CLASS_NAMES)
    if cfg.DATA_CONFIG.DATASET == "NuScenesDataset":
        return summarize_nuscenes_summary(os.path.join(output_dir, "metrics_summary.json"), classes)
    return summarize_waymo(result)


class OpenPCDetBackend:
    """See the module docstring and ``integration.backends.base.Backend``.

    ``pcdet_root``: the OpenPCDet source tree (None: the one an installed ``pcdet`` comes from).
    """

    name = "openpcdet"
    single_node_only = True  # eval_one_epoch evaluates on every process whose LOCAL_RANK is 0

    def __init__(self, pcdet_root=None):
        self.pcdet_root = pcdet_root
        self.served = []
        self.logger = None
        self.work_dir = None
        self._datasets = {}

    def import_stack(self):
        self.pcdet_root, fallbacks, self.served = import_stack(self.pcdet_root)
        return (f"OpenPCDet from {self.pcdet_root}; placeholders for {len(self.served)} unavailable modules; "
                f"CPU fallbacks: {', '.join(fallbacks)}")

    def load_config(self, path, data_root, work_dir):
        """OpenPCDet's config; under torch.distributed ``cfg.LOCAL_RANK`` is set as OpenPCDet's test.py sets it
        (it picks the evaluating process) and rank 0 makes the data link before the others read it."""
        cfg = pcdet_config.load_config(path, self.pcdet_root)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if distributed else 0
        if distributed:
            cfg.LOCAL_RANK = int(os.environ["LOCAL_RANK"])
        self.work_dir = work_dir
        self.logger = make_logger(work_dir, rank)
        if rank == 0:
            pcdet_config.set_data_path(cfg, data_root, work_dir)
        if distributed:
            torch.distributed.barrier()
        if rank != 0:
            pcdet_config.set_data_path(cfg, data_root, work_dir)
        return cfg

    def check_data(self, cfg):
        pcdet_config.check_inputs(cfg.DATA_CONFIG)
        pcdet_config.check_eval_dependencies(cfg.DATA_CONFIG, cfg.MODEL.POST_PROCESSING.get("EVAL_METRIC"))
        self._dataset(cfg, "val")

    def _dataset(self, cfg, split):
        if split not in self._datasets:
            self._datasets[split] = build_dataset(cfg, self.logger, calibration=split == "train")[0]
        return self._datasets[split]

    def build_model(self, cfg, device):
        return build_model(cfg, self._dataset(cfg, "val"), device)

    def load_weights(self, model, path):
        """OpenPCDet's ``load_params_from_file``; every parameter and buffer must be updated from ``path``.

        Returns the number of tensors in the model's state_dict.
        """
        source = _model_state_file(path, os.path.join(self.work_dir, "logs"))
        collector = _NotUpdated()
        self.logger.addHandler(collector)
        try:
            model.load_params_from_file(filename=source, logger=self.logger,
                                        to_cpu=model_device(model).type == "cpu")
        except (KeyError, RuntimeError, OSError) as err:
            raise DriverError(f"--checkpoint: cannot load {path}: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None
        finally:
            self.logger.removeHandler(collector)
            if source != path:
                os.unlink(source)
        if collector.keys:
            keys = collector.keys
            raise DriverError(f"--checkpoint: {path} does not fit the config's model: {len(keys)} tensors not "
                              f"loaded ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        return len(model.state_dict())

    def split_size(self, cfg, split):
        return len(self._dataset(cfg, split).infos)

    def calibration_loader(self, cfg, num_frames, seed, distributed):
        """``num_frames`` training frames drawn without replacement with ``seed`` (``distributed``: this rank's
        shard of them, OpenPCDet's DistributedSampler, without its padding repeats)."""
        total = self.split_size(cfg, "train")
        if num_frames > total:
            raise DriverError(f"--calib-batches {num_frames} is larger than the training split ({total} frames)")
        _, loader = build_dataset(cfg, self.logger, calibration=True, dist=distributed)
        indices = sorted(np.random.RandomState(seed).choice(total, num_frames, replace=False).tolist())
        keep_frames(loader, indices)
        return _FirstBatches(loader, unpadded_shard_size(loader))

    calibration_forward = staticmethod(calibration_forward)

    @staticmethod
    def task_loss_fn():
        """``ptq.centerpoint_task_loss`` on ``calibration_forward``'s head outputs (OpenPCDet ``CenterHead`` branches: dicts with ``hm``)."""
        from pytorch_quantization.ptq import centerpoint_task_loss
        return centerpoint_task_loss

    def evaluate(self, model, cfg, work_dir, name, max_eval_frames, distributed):
        """``eval_one_epoch`` over the val split (its first ``max_eval_frames`` frames when given).

        OpenPCDet's outputs go to ``<work_dir>/logs/<name>/``. ``distributed``: each rank runs its shard, rank 0
        evaluates and sends the row values to every rank; ms_per_frame is this rank's own.
        """
        from pathlib import Path
        eval_utils = import_eval_utils(self.pcdet_root)
        dataset, loader = build_dataset(cfg, self.logger, dist=distributed)
        tokens = None
        if max_eval_frames is not None and max_eval_frames < len(dataset.infos):
            keep_frames(loader, range(max_eval_frames))
            if cfg.DATA_CONFIG.DATASET == "NuScenesDataset":
                tokens = [info["token"] for info in dataset.infos]
        if cfg.DATA_CONFIG.DATASET == "WaymoDataset":
            waymo_eval.install()  # the official op in the metrics environment, fed arrays
        result_dir = Path(work_dir) / "logs" / name
        device = model_device(model)
        timer = _FrameTimer(model)
        try:
            with cuda_calls_to(device), ground_truth_limited_to(tokens), \
                    ddp_on_cpu(eval_utils, device) if distributed else contextlib.nullcontext():
                result = eval_utils.eval_one_epoch(
                    cfg, types.SimpleNamespace(save_to_file=False, infer_time=False), model, loader, epoch_id=name,
                    logger=self.logger, dist_test=distributed, result_dir=result_dir)
        finally:
            timer.remove()
        values = summarize(cfg, result, result_dir / "final_result" / "data") if cfg.LOCAL_RANK == 0 else None
        if distributed:
            shared = [values]
            torch.distributed.broadcast_object_list(shared, src=0)
            values = shared[0]
        return values, timer.ms_per_frame

    def metric_columns(self, cfg):
        if cfg.DATA_CONFIG.DATASET == "WaymoDataset":
            return list(waymo_metric.TABLE_COLUMNS)
        return ["mAP", "NDS"] + [f"AP {c}" for c in cfg.CLASS_NAMES]
