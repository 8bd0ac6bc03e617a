"""CenterPoint post-training quantization driver.

    python integration/centerpoint_ptq.py                       # synthetic data, committed checkpoint
    python integration/centerpoint_ptq.py --framework mmdet3d --config CFG --checkpoint CKPT \\
        --data-root DIR --modes fp32,w8,w8a8 --calib-method percentile --calib-batches 64

For each mode a FRESH copy of the float model is (optionally BN-folded,) quantized with the
pytorch_quantization.ptq preset of that name, calibrated on a seeded subset of the training split
(or loaded from --calib-file) and evaluated on the val split with the config's own metric through
mmengine's test loop. One table (mode, mAP, NDS, per-class AP, ms/frame, calibration seconds) is
printed and written to the work dir as results.md / results.json, beside calib_<mode>.json files.
Bad input ends with a one-line error and exit status 2 before anything is written.
"""
import copy
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, REPO_ROOT)

from integration.ptq_driver import options  # noqa: E402
from integration.ptq_driver.errors import DriverError  # noqa: E402
from integration.ptq_driver.mmdet3d_config import (  # noqa: E402
    check_info_files, evaluator_cfg, fill_dataset_version, load_config, set_data_root)
from integration.ptq_driver.results import build_table, summarize_nuscenes, write_results  # noqa: E402


def ensure_synthetic_dataset(root):
    """Generate (once) and prepare the default synthetic nuScenes-format dataset under ``root``."""
    if not os.path.isdir(os.path.join(root, "v1.0-mini")):
        if os.path.isdir(root) and os.listdir(root):
            raise DriverError(f"{root} exists but holds no v1.0-mini tables; remove it to regenerate the "
                              f"synthetic dataset, or pass --data-root")
        from integration.synthetic_nuscenes import generate
        print(f"generating the synthetic nuScenes-format dataset in {root} (once)")
        generate(root)
    infos = [os.path.join(root, f"nuscenes_infos_{s}.pkl") for s in ("train", "val")]
    if not all(os.path.isfile(p) for p in infos):
        print(f"preparing info files in {root} (once)")
        cmd = [sys.executable, os.path.join(REPO_ROOT, "integration", "prepare_data.py"), "nuscenes",
               "--framework", "mmdet3d", "--root", root, "--version", "v1.0-mini"]
        done = subprocess.run(cmd)
        if done.returncode != 0:
            raise DriverError(f"preparing the synthetic dataset failed: {' '.join(cmd)}")


def init_distributed(launcher, device):
    """torchrun's environment -> the default process group (gloo on CPU, nccl on GPUs).

    Done here rather than by mmengine's ``init_dist``, which selects a CUDA device unconditionally.
    """
    if launcher == "none":
        return
    import torch
    import torch.distributed as dist
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")


def plan_calibration(args, cfg, backend):
    """Which modes calibrate from data and how many frames; errors before any work starts."""
    calib_files = {m: options.calib_file_for(args.calib_file, m) for m in args.modes if m != "fp32"}
    needs_data = [m for m, f in calib_files.items() if f is None]
    frames = None
    if needs_data:
        total = backend.split_size(cfg, "train")
        frames = args.calib_batches if args.calib_batches is not None else min(32, total)
    return calib_files, frames


def check_calibration_files(float_model, calib_files, args, example, backend):
    """Apply every reused calibration file to a throw-away quantized copy now, so a file that does
    not fit stops the run before anything is written."""
    for mode, path in calib_files.items():
        if path is not None:
            quantize_and_calibrate(float_model, mode, args, path, None, example, backend)


def calibration_metadata(mode, args):
    """What a calibration file depends on besides the model: checked again when it is reused."""
    return {"mode": mode, "calib_method": args.calib_method, "percentile": args.percentile,
            "skip_zeros": args.skip_zeros, "fold_bn": args.fold_bn, "skip_layers": list(args.skip_layers),
            "seed": args.seed, "config": os.path.abspath(args.config)}


def _load_calibration(model, path, args):
    from pytorch_quantization import ptq
    try:
        saved = ptq.load_calibration(model, path)
    except ValueError as err:
        raise DriverError(f"--calib-file: {err}".splitlines()[0]) from None
    if saved.get("fold_bn", args.fold_bn) != args.fold_bn:
        raise DriverError(f"--calib-file: {path} was calibrated with fold_bn={saved['fold_bn']}; "
                          f"rerun with{'' if saved['fold_bn'] else 'out'} --fold-bn")


def has_activation_quantizers(model):
    from pytorch_quantization import ptq
    return any(ref.role == "input" and ref.active for ref in ptq.find_quantizers(model))


def quantize_and_calibrate(float_model, mode, args, calib_file, loader, example, backend):
    """A quantized copy of ``float_model`` and the seconds its calibration took.

    Weight-only modes need no data (weight amax comes from the tensors): one batch is passed only
    because ``calibrate`` requires one.
    """
    from pytorch_quantization import ptq
    model = copy.deepcopy(float_model)
    if args.fold_bn:
        ptq.fold_batchnorm(model, example, forward_fn=backend.calibration_forward)
    if mode == "fp32":
        return model, None
    ptq.quantize_model(model, mode, skip=args.skip_layers or None)
    start = time.perf_counter()
    if calib_file is not None:
        _load_calibration(model, calib_file, args)
    else:
        ptq.calibrate(model, loader, forward_fn=backend.calibration_forward, method=args.calib_method,
                      percentile=args.percentile, skip_zeros=args.skip_zeros,
                      num_batches=None if has_activation_quantizers(model) else 1)
    return model, time.perf_counter() - start


def prepare(args):
    """Every check and every object the comparison needs; raises DriverError before anything is written."""
    args = options.check_args(args)
    if args.data_root is None:
        args.data_root = options.DEFAULT_DATA_ROOT
        ensure_synthetic_dataset(args.data_root)
    from integration import mmdet3d_backend as backend
    backend.import_stack()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise DriverError("--device cuda: no CUDA device is available to this torch build; use --device cpu")
    cfg = set_data_root(load_config(args.config), args.data_root)
    evaluator_cfg(cfg)
    check_info_files(cfg, args.data_root)
    fill_dataset_version(cfg)
    if args.max_eval_frames is not None and args.max_eval_frames > backend.split_size(cfg, "val"):
        raise DriverError(f"--max-eval-frames {args.max_eval_frames} is larger than the val split")
    float_model = backend.build_model(cfg, args.device)
    loaded = backend.load_weights(float_model, args.checkpoint)
    print(f"loaded {loaded} tensors from {args.checkpoint} (no missing or unexpected keys)")
    calib_files, calib_frames = plan_calibration(args, cfg, backend)
    init_distributed(args.launcher, args.device)
    loader = backend.calibration_loader(cfg, calib_frames or 1, args.seed)
    example = next(iter(loader))  # for BN-folding traces and sensitivity's output SQNR
    check_calibration_files(float_model, calib_files, args, example, backend)
    return dict(args=args, backend=backend, cfg=cfg, float_model=float_model, calib_files=calib_files,
                calib_frames=calib_frames, loader=loader, example=example)


def compare_modes(args, backend, cfg, float_model, calib_files, calib_frames, loader, example):
    """Quantize, calibrate and evaluate a fresh copy per mode; write the table and calibration files."""
    from mmengine.dist import is_main_process
    from pytorch_quantization import ptq

    os.makedirs(args.work_dir, exist_ok=True)
    classes = list(cfg.get("class_names") or evaluator_cfg(cfg).get("classes") or [])
    rows, sensitivities = [], {}
    for mode in args.modes:
        print(f"== {mode} ==")
        model, calib_s = quantize_and_calibrate(float_model, mode, args, calib_files.get(mode), loader, example,
                                                backend)
        if mode != "fp32" and is_main_process():
            ptq.save_calibration(model, os.path.join(args.work_dir, options.calib_file_name(mode)),
                                 metadata=calibration_metadata(mode, args))
        metrics, ms = backend.evaluate(model, cfg, args.work_dir, mode, args.launcher, args.max_eval_frames)
        rows.append(dict(mode=mode, **summarize_nuscenes(metrics, classes), ms_per_frame=ms, calib_s=calib_s))
        if args.sensitivity and mode != "fp32":
            sensitivities[mode] = layer_sensitivity(model, cfg, args, backend, classes, example)
    if not is_main_process():
        return
    table = build_table(rows, classes)
    print(table)
    write_results(args.work_dir, table, rows, dict(vars(args), calib_frames=calib_frames, classes=classes))
    for mode, sens in sensitivities.items():
        sens.save(os.path.join(args.work_dir, f"sensitivity_{mode}.md"))
    print(f"wrote {os.path.join(args.work_dir, 'results.md')} and results.json")


def layer_sensitivity(model, cfg, args, backend, classes, example):
    """Per-layer sensitivity of ``model`` ranked by the val mAP (one evaluation per layer)."""
    from pytorch_quantization import ptq

    def val_map(m):
        metrics, _ = backend.evaluate(m, cfg, args.work_dir, "sensitivity", args.launcher, args.max_eval_frames)
        return summarize_nuscenes(metrics, classes)["mAP"]

    return ptq.sensitivity(model, val_map, sample=example, forward_fn=backend.calibration_forward)


def main(argv=None):
    args = options.build_parser().parse_args(argv)
    try:
        if args.framework == "openpcdet":
            from integration import openpcdet_backend
            openpcdet_backend.run(options.check_args(args))
        else:
            compare_modes(**prepare(args))
    except DriverError as err:
        print(f"centerpoint_ptq: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
