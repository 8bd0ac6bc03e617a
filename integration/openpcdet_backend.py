"""OpenPCDet side of the CenterPoint PTQ driver (``centerpoint_ptq.py --framework openpcdet``).

Built with OpenPCDet's own pieces: ``cfg_from_yaml_file``, ``build_dataloader``, ``build_network``,
``load_params_from_file`` and ``tools/eval_utils/eval_utils.eval_one_epoch`` (which calls the dataset's
``generate_prediction_dicts`` and ``evaluation``). ``run(args)`` takes the driver's parsed and checked
arguments (``options.build_parser`` + ``options.check_args``, plus ``pcdet_root``) and prints / writes
the same table as the MMDetection3D path.

``--device cpu`` needs no compiled OpenPCDet op: ``import_stack`` installs the placeholders of
``integration.pcdet_compat.placeholders`` before importing pcdet and the CPU NMS / scatter fallbacks
after; every build / forward runs inside ``cuda_calls_to(device)`` and every forward inside
``bias_after_sparse_conv`` (spconv's CPU kernels refuse a bias in eval mode). On CUDA the original ops run.

Quantized: every Linear (PillarVFE), Conv2d / ConvTranspose2d (BEV backbone, head) and spconv layer
(3D backbone) through ``ptq.quantize_model``, and the residual add of every ``SparseBasicBlock`` through
``ptq.quantize_residual_blocks`` (one shared quantizer for both operands).

``--launcher pytorch`` (under torchrun) goes through OpenPCDet's own distributed test path: the process
group is made (gloo on CPU, nccl on CUDA), both loaders come from ``build_dataloader(dist=True)`` (each rank
calibrates on its shard; ``ptq.calibrate`` all-reduces the statistics, so every rank gets the amaxes one
process would), and ``eval_one_epoch(dist_test=True)`` gathers the detections with ``merge_results_dist``
(through ``<work_dir>/logs/<mode>/tmpdir``) and evaluates them on rank 0, which alone writes files. On CPU
its DDP wrapping is made to work by ``pcdet_compat.dist_eval.ddp_on_cpu``. ``--max-eval-frames N`` keeps the
first N val frames before they are sharded. ``cfg.LOCAL_RANK`` picks the evaluating process, as in
OpenPCDet's ``test.py``, so runs span one node only.
"""
import contextlib
import copy
import logging
import os
import pickle
import sys
import time
import types

import numpy as np
import torch

from integration.pcdet_compat import pcdet_config, placeholders
from integration.pcdet_compat.device import cuda_calls_to, model_device
from integration.pcdet_compat.dist_eval import ddp_on_cpu, keep_frames, unpadded_shard_size
from integration.pcdet_compat.frame_seed import seed_frames
from integration.pcdet_compat.sparse_bias import bias_after_sparse_conv
from integration.pcdet_compat.pcdet_metrics import summarize_nuscenes_summary, summarize_waymo
from integration.ptq_driver import options
from integration.ptq_driver.errors import DriverError
from integration.ptq_driver.results import build_table, write_results

__all__ = ["import_stack", "build_dataset", "build_model", "load_weights", "calibration_loader",
           "calibration_forward", "quantize", "import_eval_utils", "evaluate", "summarize", "run"]


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
                          f"(see integration/README_openpcdet.md)") from None
    from integration.pcdet_compat.fallbacks import install_cpu_fallbacks
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
    reproducibly (``pcdet_compat.frame_seed``)."""
    from pcdet.datasets import build_dataloader
    ds_cfg = pcdet_config.calibration_dataset_cfg(cfg.DATA_CONFIG) if calibration else cfg.DATA_CONFIG
    dataset, loader, _ = build_dataloader(dataset_cfg=ds_cfg, class_names=cfg.CLASS_NAMES, batch_size=1,
                                          dist=dist, workers=0, logger=logger, training=False)
    seed_frames(dataset)
    if len(dataset) == 0:
        split = "training" if calibration else "val"
        raise DriverError(f"--data-root: the {split} split of {cfg.DATA_CONFIG.DATA_PATH} has no frames")
    return dataset, loader


def build_model(cfg, dataset, device):
    """``build_network`` on ``device`` in eval mode (its ``.cuda()`` calls mapped to ``device``)."""
    from pcdet.models import build_network
    with cuda_calls_to(device):
        model = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset)
    return model.to(device).eval()


class _NotUpdated(logging.Handler):
    """Collects the keys ``load_params_from_file`` reports as not loaded."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.keys = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Not updated weight "):
            self.keys.append(message[len("Not updated weight "):].split(":")[0])


def load_weights(model, path, logger):
    """OpenPCDet's ``load_params_from_file``; every parameter and buffer must be updated from ``path``.

    Returns the number of tensors in the model's state_dict.
    """
    collector = _NotUpdated()
    logger.addHandler(collector)
    try:
        model.load_params_from_file(filename=path, logger=logger, to_cpu=model_device(model).type == "cpu")
    except (KeyError, RuntimeError, OSError, pickle.UnpicklingError) as err:
        raise DriverError(f"--checkpoint: cannot load {path} (an OpenPCDet checkpoint holds 'model_state'): "
                          f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    finally:
        logger.removeHandler(collector)
    if collector.keys:
        keys = collector.keys
        raise DriverError(f"--checkpoint: {path} does not fit the config's model: {len(keys)} tensors not loaded "
                          f"({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    return len(model.state_dict())


def calibration_loader(cfg, num_frames, seed, logger, dist=False):
    """``(loader, frames)``: ``num_frames`` training frames (None: min(32, split size)) drawn without
    replacement with ``seed`` (``dist``: this rank's shard of them)."""
    dataset, loader = build_dataset(cfg, logger, calibration=True, dist=dist)
    total = len(dataset.infos)
    num_frames = min(32, total) if num_frames is None else num_frames
    if num_frames > total:
        raise DriverError(f"--calib-batches {num_frames} is larger than the training split ({total} frames)")
    indices = sorted(np.random.RandomState(seed).choice(total, num_frames, replace=False).tolist())
    return keep_frames(loader, indices), num_frames


def calibration_forward(model, batch):
    """Every module a quantizer sits in (VFE, 3D / BEV backbones, head convs), no box decoding or NMS.

    ``batch`` is a collated OpenPCDet batch (numpy); a copy is moved to the model's device.
    """
    from pcdet.models import load_data_to_gpu
    batch = dict(batch)
    with cuda_calls_to(model_device(model)), bias_after_sparse_conv(model):
        load_data_to_gpu(batch)
        for module in model.module_list:
            head = getattr(model, "dense_head", None)
            if module is head and hasattr(head, "shared_conv") and hasattr(head, "heads_list"):
                features = head.shared_conv(batch["spatial_features_2d"])
                return [branch(features) for branch in head.heads_list]
            batch = module(batch)
    return batch


def quantize(model, mode, skip=None):
    """Quantize ``model`` in place with preset ``mode``: layers, then the residual adds."""
    from pytorch_quantization import ptq
    layers = ptq.quantize_model(model, mode, skip=skip)
    adds = ptq.quantize_residual_blocks(model, mode, skip=skip)
    return layers, adds


class _FrameTimer:
    """Seconds spent in the model's forward (forward pre-hook / hook), synchronised on CUDA."""

    def __init__(self, model):
        self.seconds, self.frames, self._start = 0.0, 0, None
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
        self.seconds += time.perf_counter() - self._start
        self.frames += 1

    def remove(self):
        for handle in self._handles:
            handle.remove()

    @property
    def ms_per_frame(self):
        return 1000.0 * self.seconds / max(self.frames, 1)


def import_eval_utils(pcdet_root):
    """OpenPCDet's ``tools/eval_utils/eval_utils`` module (``tools/`` is put on ``sys.path``)."""
    tools = os.path.join(pcdet_root, "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    from eval_utils import eval_utils  # pylint: disable=import-outside-toplevel
    return eval_utils


def evaluate(model, cfg, pcdet_root, work_dir, name, logger, max_eval_frames=None, dist_test=False):
    """``eval_one_epoch`` over the val split (its first ``max_eval_frames`` frames when given).

    Returns ``(row values, ms_per_frame)``; OpenPCDet's outputs go to ``<work_dir>/logs/<name>/``.
    ``dist_test``: each rank runs its shard, rank 0 evaluates and sends the row values to every rank;
    ms_per_frame is this rank's own.
    """
    from pathlib import Path
    from integration.mmdet3d_backend import ground_truth_limited_to
    eval_utils = import_eval_utils(pcdet_root)
    dataset, loader = build_dataset(cfg, logger, dist=dist_test)
    tokens = None
    if max_eval_frames is not None and max_eval_frames < len(dataset.infos):
        keep_frames(loader, range(max_eval_frames))
        if cfg.DATA_CONFIG.DATASET == "NuScenesDataset":
            tokens = [info["token"] for info in dataset.infos]
    result_dir = Path(work_dir) / "logs" / name
    device = model_device(model)
    timer = _FrameTimer(model)
    try:
        with cuda_calls_to(device), bias_after_sparse_conv(model), ground_truth_limited_to(tokens), \
                ddp_on_cpu(eval_utils, device) if dist_test else contextlib.nullcontext():
            result = eval_utils.eval_one_epoch(cfg, types.SimpleNamespace(save_to_file=False, infer_time=False),
                                               model, loader, epoch_id=name, logger=logger, dist_test=dist_test,
                                               result_dir=result_dir)
    finally:
        timer.remove()
    values = summarize(cfg, result, result_dir / "final_result" / "data") if cfg.LOCAL_RANK == 0 else None
    if dist_test:
        shared = [values]
        torch.distributed.broadcast_object_list(shared, src=0)
        values = shared[0]
    return values, timer.ms_per_frame


def summarize(cfg, result, output_dir):
    """Row values (mAP, NDS, class_AP) of one evaluation; see ``pcdet_compat.pcdet_metrics``."""
    classes = list(cfg.CLASS_NAMES)
    if cfg.DATA_CONFIG.DATASET == "NuScenesDataset":
        return summarize_nuscenes_summary(os.path.join(output_dir, "metrics_summary.json"), classes)
    return summarize_waymo(result, classes)


def _check_run_args(args):
    if args.launcher == "pytorch":
        missing = [k for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE") if k not in os.environ]
        if missing:
            raise DriverError(f"--launcher pytorch: {', '.join(missing)} not set; start the driver with "
                              f"torchrun (python -m torch.distributed.run --nproc_per_node N ...)")
        if os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]) != os.environ["WORLD_SIZE"]:
            raise DriverError("--launcher pytorch: --framework openpcdet runs on one node only (OpenPCDet's "
                              "eval_one_epoch evaluates on every process whose LOCAL_RANK is 0)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise DriverError("--device cuda: no CUDA device is available to this torch build; use --device cpu")


def _calibrated_copy(float_model, mode, args, calib_file, loader, example):
    """A quantized (optionally BN-folded) copy of ``float_model`` and the seconds calibration took.

    Under torch.distributed each rank calibrates on the frames of its shard that are not padding.
    """
    from pytorch_quantization import ptq
    model = copy.deepcopy(float_model)
    if args.fold_bn:
        ptq.fold_batchnorm(model, example, forward_fn=calibration_forward)
    if mode == "fp32":
        return model, None
    layers, adds = quantize(model, mode, skip=args.skip_layers or None)
    added = adds.column("status").count("residual add quantized")
    print(f"quantized {len(layers.swapped)} layers ({len(layers.left)} left float) and {added} residual adds")
    start = time.perf_counter()
    if calib_file is not None:
        try:
            ptq.load_calibration(model, calib_file)
        except (ValueError, KeyError) as err:
            raise DriverError(f"--calib-file: {calib_file} does not fit mode {mode}: {err}".splitlines()[0]) \
                from None
    else:
        ptq.calibrate(model, loader, forward_fn=calibration_forward, method=args.calib_method,
                      percentile=args.percentile, skip_zeros=args.skip_zeros, num_batches=unpadded_shard_size(loader))
    return model, time.perf_counter() - start


def _start_processes(args, cfg):
    """``(rank, distributed)``: the process group under ``--launcher pytorch`` (gloo on CPU, nccl on CUDA), and
    ``cfg.LOCAL_RANK`` set as OpenPCDet's test.py sets it (it picks the evaluating process)."""
    if args.launcher == "none":
        return 0, False
    from integration.centerpoint_ptq import init_distributed
    init_distributed(args.launcher, args.device)
    cfg.LOCAL_RANK = int(os.environ["LOCAL_RANK"])
    return torch.distributed.get_rank(), True


def _data_path_set(cfg, args, rank, distributed):
    """``set_data_path`` (it may create a link in the work dir): rank 0 first, then the others."""
    if rank == 0:
        pcdet_config.set_data_path(cfg, args.data_root, args.work_dir)
    if distributed:
        torch.distributed.barrier()
    if rank != 0:
        pcdet_config.set_data_path(cfg, args.data_root, args.work_dir)


def run(args):
    """The whole comparison for ``--framework openpcdet`` (``args`` already through ``options.check_args``)."""
    try:
        _run(args)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(args):
    from pytorch_quantization import ptq
    _check_run_args(args)
    root, fallbacks, served = import_stack(getattr(args, "pcdet_root", None))
    cfg = pcdet_config.load_config(args.config, root)
    rank, distributed = _start_processes(args, cfg)
    world = torch.distributed.get_world_size() if distributed else 1
    if rank == 0:
        print(f"OpenPCDet from {root}; placeholders for {len(served)} unavailable modules; CPU fallbacks: "
              f"{', '.join(fallbacks)}" + (f"; {world} processes" if distributed else ""))
    os.makedirs(args.work_dir, exist_ok=True)
    logger = make_logger(args.work_dir, rank)
    _data_path_set(cfg, args, rank, distributed)
    pcdet_config.check_inputs(cfg.DATA_CONFIG)
    pcdet_config.check_eval_dependencies(cfg.DATA_CONFIG, cfg.MODEL.POST_PROCESSING.get("EVAL_METRIC"))
    val_set, _ = build_dataset(cfg, logger)
    if args.max_eval_frames is not None and args.max_eval_frames > len(val_set):
        raise DriverError(f"--max-eval-frames {args.max_eval_frames} is larger than the val split ({len(val_set)})")
    float_model = build_model(cfg, val_set, args.device)
    loaded = load_weights(float_model, args.checkpoint, logger)
    if rank == 0:
        print(f"loaded {loaded} tensors from {args.checkpoint}")

    calib_files = {m: options.calib_file_for(args.calib_file, m) for m in args.modes if m != "fp32"}
    needs_frames = any(f is None for f in calib_files.values()) or args.fold_bn
    calib_frames, loader, example = None, None, None
    if needs_frames:
        loader, calib_frames = calibration_loader(cfg, args.calib_batches, args.seed, logger, dist=distributed)
        if calib_frames < world:
            raise DriverError(f"--calib-batches {calib_frames} is smaller than the number of processes ({world}); "
                              f"every process needs a calibration frame")
        example = loader.dataset.collate_batch([loader.dataset[0]])  # the same first frame on every rank

    classes = list(cfg.CLASS_NAMES)
    rows, sensitivities = [], {}
    for mode in args.modes:
        if rank == 0:
            print(f"== {mode} ==")
        model, calib_s = _calibrated_copy(float_model, mode, args, calib_files.get(mode), loader, example)
        if mode != "fp32" and rank == 0:
            ptq.save_calibration(model, os.path.join(args.work_dir, options.calib_file_name(mode)))
        values, ms = evaluate(model, cfg, root, args.work_dir, mode, logger, args.max_eval_frames, distributed)
        rows.append(dict(mode=mode, **values, ms_per_frame=ms, calib_s=calib_s))
        if args.sensitivity and mode != "fp32":
            sensitivities[mode] = ptq.sensitivity(model, lambda m: evaluate(
                m, cfg, root, args.work_dir, "sensitivity", logger, args.max_eval_frames, distributed)[0]["mAP"])
    if rank != 0:
        return
    table = build_table(rows, classes)
    print(table)
    run_info = {k: v for k, v in vars(args).items()}
    run_info.update(calib_frames=calib_frames, classes=classes, pcdet_root=root, placeholders=served,
                    processes=world)
    write_results(args.work_dir, table, rows, run_info)
    for mode, sens in sensitivities.items():
        sens.save(os.path.join(args.work_dir, f"sensitivity_{mode}.md"))
    print(f"wrote {os.path.join(args.work_dir, 'results.md')} and results.json")
