"""``MMDet3DBackend``: the MMDetection3D side of the CenterPoint PTQ driver (``integration.backends.base.Backend``).

Model, data and evaluation are built with the framework's own builders (MODELS, DATASETS, Runner + TestLoop +
the config's metric). Checkpoints: mmengine files (``state_dict``) or bare state_dicts.
"""
import collections
import copy
import os
import time

import numpy as np
import torch

from integration.backends.base import FrameTimes
from integration.driver.errors import DriverError
from integration.backends.mmdet3d import config as mm_config
from integration.backends.mmdet3d.config import base_dataset_cfg, evaluator_cfg, is_waymo
from integration.backends.mmdet3d.metrics import summarize_nuscenes
from integration.data.nuscenes_eval import ground_truth_limited_to
from integration.data.waymo import metric as waymo_metric

__all__ = ["MMDet3DBackend"]


def _read_state_dict(path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # mmengine training checkpoints also pickle their message hub; the user named this file.
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:
            raise DriverError(f"--checkpoint: cannot read {path}: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise DriverError(f"--checkpoint: {path} holds no state_dict of tensors")
    stripped = collections.OrderedDict(
        (k[len("module."):] if k.startswith("module.") else k, v) for k, v in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:  # per-module versions: mmdet3d's spconv loader permutes weights lacking version 2
        stripped._metadata = collections.OrderedDict(  # pylint: disable=protected-access
            (k[len("module."):] if k.startswith("module.") else k, v) for k, v in metadata.items())
    return stripped


def _first_val_tokens(cfg, num_frames):
    from mmengine.fileio import load
    ev = evaluator_cfg(cfg)
    infos = load(ev["ann_file"])["data_list"]
    return [info["token"] for info in infos[:num_frames]]


def make_eval_hook():
    """A Runner hook: tqdm bar over the test loop and the model's time per frame."""
    from mmengine.dist import is_main_process
    from mmengine.hooks import Hook
    from tqdm import tqdm

    class EvalProgressHook(Hook):
        priority = "LOWEST"

        def before_test_epoch(self, runner):
            self.times = FrameTimes()
            self.bar = tqdm(total=len(runner.test_dataloader), desc="evaluate", unit="frame",
                            disable=not is_main_process())

        def before_test_iter(self, runner, batch_idx, data_batch=None):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._start = time.perf_counter()

        def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.add(time.perf_counter() - self._start, len(outputs) if outputs is not None else 1)
            self.bar.update(1)

        def after_test_epoch(self, runner, metrics=None):
            self.bar.close()

        @property
        def ms_per_frame(self):
            return self.times.ms_per_frame

    return EvalProgressHook()


def check_waymo_evaluation(evaluator, root):
    """The Waymo metric's ground truth, its TensorFlow 2.13 environment and the proto package that formats
    predictions must all be there before any model runs."""
    from integration.data.waymo.protos import WaymoEnvironmentError, waymo_module
    gt = evaluator.get("waymo_bin_file", "")
    if not os.path.isfile(gt):
        raise DriverError(f"--data-root: {root} has no waymo_format/gt.bin ({gt}), the validation ground truth the "
                          f"Waymo metric reads; download it with the Waymo Open Dataset (or regenerate the synthetic "
                          f"set: python -m integration.data.waymo --out DIR)")
    try:
        waymo_metric.metrics_python()
        waymo_module("protos.metrics_pb2")
    except WaymoEnvironmentError as err:
        raise DriverError(str(err)) from None


class MMDet3DBackend:
    """See the module docstring and ``integration.backends.base.Backend``."""

    name = "mmdet3d"
    single_node_only = False

    def import_stack(self):
        try:
            from mmdet3d.utils import register_all_modules
            import mmdet3d
        except ImportError as err:
            raise DriverError(f"MMDetection3D is not importable ({err}); install the stack with "
                              f"scripts/setup_mmdet3d.sh") from None
        register_all_modules(init_default_scope=True)
        return f"MMDetection3D {mmdet3d.__version__}"

    def load_config(self, path, data_root, work_dir):
        cfg = mm_config.load_config(path)
        if data_root is not None:
            mm_config.set_data_root(cfg, data_root)
        evaluator_cfg(cfg)
        mm_config.use_waymo_op_metric(cfg)
        return cfg

    def check_data(self, cfg):
        root = cfg.get("data_root", "").rstrip("/")
        mm_config.check_info_files(cfg, root)
        if is_waymo(cfg):
            check_waymo_evaluation(evaluator_cfg(cfg), root)
        else:
            mm_config.fill_dataset_version(cfg)

    def build_model(self, cfg, device):
        """The detector from ``cfg.model`` (with its train/test settings), in eval mode on ``device``."""
        from mmdet3d.registry import MODELS
        model = MODELS.build(copy.deepcopy(cfg.model))
        return model.to(device).eval()

    def metric_columns(self, cfg):
        """Waymo: mAPH / mAP at LEVEL_2 and LEVEL_1, overall and per class; else mAP, NDS, per-class AP."""
        if is_waymo(cfg):
            return list(waymo_metric.TABLE_COLUMNS)
        return ["mAP", "NDS"] + [f"AP {c}" for c in self._classes(cfg)]

    @staticmethod
    def _classes(cfg):
        return list(cfg.get("class_names") or evaluator_cfg(cfg).get("classes") or [])

    def load_weights(self, model, path):
        """Load ``path`` into ``model``; every key must match in name and shape.

        Returns the number of tensors loaded. Missing or unexpected keys, or shape mismatches, mean
        the checkpoint belongs to another config: one-line error listing the first few.
        """
        state = _read_state_dict(path)
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                problems.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        if not problems:
            # shapes are checked by the modules' own loaders (mmdet3d's spconv layers permute old-layout kernels)
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as err:
                shapes = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
                problems.append(f"{len(shapes)} shape mismatch ({shapes[0] if shapes else str(err).splitlines()[0]})")
        if problems:
            raise DriverError(f"--checkpoint: {path} does not fit the config's model: " + "; ".join(problems))
        return len(state)

    @staticmethod
    def split_size(cfg, split):
        """Number of frames in the ``train`` or ``val`` split (reads the info file only)."""
        from mmdet3d.registry import DATASETS
        ds_cfg = copy.deepcopy(base_dataset_cfg(cfg[f"{split}_dataloader"]["dataset"]))
        ds_cfg.update(pipeline=[], test_mode=True)
        return len(DATASETS.build(ds_cfg))

    def calibration_loader(self, cfg, num_frames, seed, distributed):
        """A loader over ``num_frames`` training frames drawn without replacement with ``seed``.

        Frames go through the TEST pipeline (no augmentation, no ground truth): calibration must see
        the inputs the evaluated model sees. Under torch.distributed the default sampler shards them.
        """
        from mmengine.runner import Runner
        total = self.split_size(cfg, "train")
        if num_frames > total:
            raise DriverError(f"--calib-batches {num_frames} is larger than the training split ({total} frames)")
        indices = sorted(np.random.RandomState(seed).choice(total, num_frames, replace=False).tolist())
        ds_cfg = copy.deepcopy(base_dataset_cfg(cfg.train_dataloader["dataset"]))
        ds_cfg.update(pipeline=copy.deepcopy(base_dataset_cfg(cfg.val_dataloader["dataset"])["pipeline"]),
                      test_mode=True, indices=indices)
        return Runner.build_dataloader(dict(batch_size=1, num_workers=0, persistent_workers=False,
                                            sampler=dict(type="DefaultSampler", shuffle=False, round_up=False),
                                                dataset=ds_cfg))

    @staticmethod
    def calibration_forward(model, batch):
        """Everything a quantizer sits in: voxel encoder, BEV backbone, neck and head (no box decoding)."""
        data = model.data_preprocessor(batch, False)
        metas = [sample.metainfo for sample in data["data_samples"]]
        _, pts_feats = model.extract_feat(data["inputs"], metas)
        return model.pts_bbox_head(pts_feats)

    @staticmethod
    def task_loss_fn():
        """``ptq.centerpoint_task_loss`` on ``calibration_forward``'s head outputs (MMDetection3D ``CenterHead``: a list per task of dicts with ``heatmap``)."""
        from pytorch_quantization.ptq import centerpoint_task_loss
        return centerpoint_task_loss

    def evaluate(self, model, cfg, work_dir, name, max_eval_frames, distributed):
        """Run mmengine's TestLoop on the val split with the config's metric.

        Returns ``(metrics, ms_per_frame)``; ``max_eval_frames`` keeps the first N val frames and
        restricts the ground truth to them.
        """
        from mmengine.runner import Runner
        loader = copy.deepcopy(cfg.val_dataloader)
        loader["dataset"] = copy.deepcopy(loader["dataset"])
        tokens = None
        evaluator = copy.deepcopy(evaluator_cfg(cfg))
        waymo = is_waymo(cfg)
        if max_eval_frames is not None and max_eval_frames < self.split_size(cfg, "val"):
            base_dataset_cfg(loader["dataset"])["indices"] = max_eval_frames
            if waymo:
                evaluator["restrict_to_evaluated_frames"] = True
            else:
                tokens = _first_val_tokens(cfg, max_eval_frames)
        hook = make_eval_hook()
        backend = "nccl" if next(model.parameters()).is_cuda else "gloo"
        runner = Runner(
            model=model, work_dir=os.path.join(work_dir, "logs", name), experiment_name=f"{name}_{time.time_ns()}",
            test_dataloader=loader, test_cfg=dict(type="TestLoop"), test_evaluator=evaluator,
            default_hooks=dict(logger=None, checkpoint=None), custom_hooks=[hook],
            launcher="pytorch" if distributed else "none", env_cfg=dict(dist_cfg=dict(backend=backend)), log_level="WARNING",
            default_scope="mmdet3d",
            # mmengine's default DDP wrapper pins device_ids=[LOCAL_RANK], which only exists on GPUs
            cfg=dict(model_wrapper_cfg=dict(type="MMDistributedDataParallel", device_ids=None)))
        with ground_truth_limited_to(tokens):
            metrics = runner.test()
        if waymo:
            return waymo_metric.table_row(metrics), hook.ms_per_frame
        return summarize_nuscenes(metrics, self._classes(cfg)), hook.ms_per_frame
