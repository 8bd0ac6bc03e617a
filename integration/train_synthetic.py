"""Train a small CenterPoint-pillar config on a synthetic dataset (CPU): nuScenes-format (default) or Waymo.

    python integration/train_synthetic.py [--dataset nuscenes|waymo] [--config CFG] [--data-root DIR]
                                          [--work-dir DIR] [--max-iters N] [--seed S] [--output PTH]
                                          [--load-from PTH] [--save-every N]

``--dataset waymo`` defaults to the synthetic Waymo config, data root and checkpoint path of
``centerpoint_ptq.py --dataset waymo`` (generate and convert the data first, e.g. by running that once).

Training runs through mmengine's Runner with the config's own loss, optimizer and (iteration-
based) schedule. Afterwards the weights alone (a state_dict, stored as float16 to keep the
committed file small; float16 holds every weight of a trained detector to ~3 significant digits)
are written atomically to ``--output`` (default: the committed checkpoint path).
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, REPO_ROOT)

from integration.driver import options  # noqa: E402
from integration.driver.errors import DriverError  # noqa: E402
from integration.backends.mmdet3d.config import check_info_files, load_config, set_data_root  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=options.DATASETS, default="nuscenes")
    p.add_argument("--config", default=None, help="default: the dataset's synthetic config")
    p.add_argument("--data-root", default=None, help="default: the dataset's synthetic data root")
    p.add_argument("--work-dir", default=None, help="default: work_dirs/train_synthetic[_waymo]")
    p.add_argument("--max-iters", type=int, default=None, help="default: the config's train_cfg.max_iters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load-from", default=None,
                   help="start from these weights (e.g. the committed checkpoint) instead of a fresh init")
    p.add_argument("--output", default=None, help="where the fp16 state_dict goes (default: the committed path)")
    p.add_argument("--save-every", type=int, default=None, metavar="N",
                   help="also write --output every N iterations (a long CPU run can be stopped and continued "
                        "with --load-from --output)")
    return p


def fill_defaults(args):
    """The dataset's synthetic config, data root, work dir and checkpoint path where not given."""
    waymo = args.dataset == "waymo"
    defaults = dict(config=options.WAYMO_DEFAULTS["config"] if waymo else options.DEFAULT_CONFIG,
                    data_root=options.WAYMO_DEFAULTS["data_root"] if waymo else options.DEFAULT_DATA_ROOT,
                    work_dir=os.path.join(REPO_ROOT, "work_dirs", "train_synthetic" + ("_waymo" if waymo else "")),
                    output=options.WAYMO_DEFAULTS["checkpoint"] if waymo else options.DEFAULT_CHECKPOINT)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def set_max_iters(cfg, max_iters):
    """Shorten / lengthen the iteration-based schedule: the loop and the last scheduler's end."""
    if cfg.train_cfg.get("type") != "IterBasedTrainLoop":
        raise DriverError("--max-iters needs an iteration-based config (train_cfg.type='IterBasedTrainLoop')")
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters + 1
    schedulers = cfg.param_scheduler
    if len(schedulers) > 1:  # warm-up then decay: keep the warm-up within the first tenth of short runs
        warmup_end = min(schedulers[0]["end"], max(1, max_iters // 10))
        schedulers[0]["end"] = warmup_end
        schedulers[-1]["begin"] = warmup_end
    last = schedulers[-1]
    last["end"] = max_iters
    if "T_max" in last:
        last["T_max"] = max(1, max_iters - last.get("begin", 0))


def save_weights(model, path):
    """The model's state_dict, floating tensors as float16, written atomically."""
    import torch
    from pytorch_quantization.ptq.atomic_io import atomic_write
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))


def _periodic_save_hook(path, every):
    """An mmengine hook (instance) writing ``save_weights(model, path)`` after every ``every``-th iteration."""
    from mmengine.hooks import Hook

    class PeriodicWeights(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if self.every_n_train_iters(runner, every):
                save_weights(runner.model, path)
                runner.logger.info(f"iteration {runner.iter + 1}: wrote {path}")

    return PeriodicWeights()


def train(args):
    fill_defaults(args)
    for name in ("max_iters", "save_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DriverError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    from integration.backends.mmdet3d.backend import MMDet3DBackend
    MMDet3DBackend().import_stack()
    from mmengine.runner import Runner
    cfg = set_data_root(load_config(args.config), args.data_root)
    check_info_files(cfg, args.data_root)
    if args.max_iters is not None:
        set_max_iters(cfg, args.max_iters)
    cfg.work_dir = args.work_dir
    if args.load_from is not None:
        if not os.path.isfile(args.load_from):
            raise DriverError(f"--load-from: {args.load_from} is not a file")
        cfg.load_from = os.path.abspath(args.load_from)
    cfg.randomness = dict(seed=args.seed, deterministic=False)
    # Validation happens separately (centerpoint_ptq.py --modes fp32): the nuScenes metric is slow.
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    if args.save_every is not None:
        runner.register_hook(_periodic_save_hook(args.output, args.save_every), priority="LOW")
    runner.train()
    save_weights(runner.model, args.output)
    print(f"wrote {args.output}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except DriverError as err:
        print(f"train_synthetic: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
