"""Command line of integration/centerpoint_ptq.py and the checks that need no framework."""
import argparse
import glob
import importlib.util
import os

from pytorch_quantization.ptq.config import CALIB_METHODS, PRESETS
from pytorch_quantization.ptq.reconstruct import METHODS as RECONSTRUCT_METHODS
from integration.driver.errors import DriverError

FRAMEWORKS = ("mmdet3d", "openpcdet")
DEFAULT_MODES = ("fp32", "w8", "w8a8")
#: modes that evaluate a preset's calibrated model on another runtime: mode -> preset
RUNTIME_MODES = {"w8a8-ort": "w8a8"}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "integration", "configs", "centerpoint_pillar_tiny_synthetic.py")
DEFAULT_CHECKPOINT = os.path.join(REPO_ROOT, "integration", "checkpoints",
                                  "centerpoint_pillar_tiny_synthetic.pth")
DEFAULT_DATA_ROOT = os.path.join(REPO_ROOT, "work_dirs", "synthetic_nuscenes")
DEFAULT_WORK_DIR = os.path.join(REPO_ROOT, "work_dirs", "centerpoint_ptq")
DATASETS = ("nuscenes", "waymo")
#: --dataset waymo without --config / --checkpoint / --data-root: the synthetic Waymo set and its checkpoint
WAYMO_DEFAULTS = dict(
    config=os.path.join(REPO_ROOT, "integration", "configs", "centerpoint_pillar_waymo_synthetic.py"),
    checkpoint=os.path.join(REPO_ROOT, "integration", "checkpoints", "centerpoint_pillar_waymo_synthetic.pth"),
    data_root=os.path.join(REPO_ROOT, "work_dirs", "synthetic_waymo"),
    work_dir=os.path.join(REPO_ROOT, "work_dirs", "centerpoint_ptq_waymo"))


def build_parser():
    p = argparse.ArgumentParser(
        description="Post-training quantization of CenterPoint: quantize a fresh copy of the model per "
                    "mode, calibrate on a seeded subset of the training split, evaluate on the val split "
                    "with the config's own metric, print one comparison table. Without arguments it "
                    "generates a small synthetic nuScenes-format dataset and runs fp32/w8/w8a8 on the "
                    "committed tiny checkpoint.",
        epilog="Both frameworks run through one pipeline (integration/driver/pipeline.py) over a Backend "
               "(integration/backends/base.py; mmdet3d/ and openpcdet/). The work dir holds results.md, "
               "results.json, calib_<mode>.json (with the settings that produced them) and logs/; it is locked "
               "while a run lasts and the previous run's outputs are removed when a run starts. Bad input: one "
               "line on stderr, exit status 2.")
    p.add_argument("--framework", default="mmdet3d", help=f"one of {', '.join(FRAMEWORKS)}")
    p.add_argument("--dataset", default="nuscenes",
                   help=f"one of {', '.join(DATASETS)}: the defaults of --config / --checkpoint / --data-root / "
                        f"--work-dir (waymo: the synthetic Waymo set, generated and converted once) and the table's "
                        f"metric columns (waymo: mAPH and mAP at LEVEL_2 and LEVEL_1, overall and per class)")
    p.add_argument("--config", default=None, help="model config (default: the tiny synthetic config)")
    p.add_argument("--checkpoint", default=None, help="weights (default: the committed tiny checkpoint)")
    p.add_argument("--data-root", default=None,
                   help="prepared dataset root (default: generate/reuse work_dirs/synthetic_nuscenes)")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES),
                   help=f"comma-separated presets out of {', '.join(PRESETS)}")
    p.add_argument("--calib-method", default="max", help=f"one of {', '.join(CALIB_METHODS)}")
    p.add_argument("--percentile", type=float, default=99.99, help="for --calib-method percentile")
    p.add_argument("--calib-batches", type=int, default=None,
                   help="calibration frames drawn from the training split (default: min(32, split size))")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subset")
    p.add_argument("--skip-zeros", nargs="?", const=True, default=False, metavar="both",
                   help="leave exact zeros out of activation statistics; with --study, '--skip-zeros both' runs "
                        "every histogram method with and without zeros")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the preceding layers first")
    p.add_argument("--skip-layers", nargs="+", default=[], metavar="GLOB", help="module names left in float")
    p.add_argument("--calib-file", default=None,
                   help="reuse calibration: a file (for every quantized mode) or a directory holding "
                        "calib_<mode>.json files as this driver writes them; the settings recorded in a file "
                        "must equal this run's")
    p.add_argument("--sensitivity", nargs="?", const="proxy", default=None, metavar="proxy|full|both",
                   help="per-layer sensitivity of each quantized mode: proxy (default; each layer's own output "
                        "SQNR, seconds), full (one evaluation per layer) or both (with the rankings' agreement)")
    p.add_argument("--study", action="store_true",
                   help="quantization study: fp32 once, then every mode x --calib-methods combination from one "
                        "statistics pass per mode, with paired-bootstrap intervals of the differences to fp32, "
                        "a table (results.md/.json/.csv) and plots (study_*.png)")
    p.add_argument("--calib-methods", default=None, metavar="M1,M2",
                   help=f"with --study: comma-separated methods (default: {','.join(CALIB_METHODS)})")
    p.add_argument("--pcdet-root", default=None,
                   help="OpenPCDet source tree for --framework openpcdet (default: where an installed pcdet lives)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--system-malloc", action="store_true",
                   help="keep glibc's malloc settings on CPU (by default freed memory stays in the heap for reuse: "
                        "page faults were a fifth of CPU ms/frame; integration/driver/allocator.py)")
    p.add_argument("--work-dir", default=None, help=f"outputs (default: {DEFAULT_WORK_DIR})")
    p.add_argument("--launcher", default="none", help="none or pytorch (torchrun)")
    p.add_argument("--export-onnx", default=None, metavar="DIR",
                   help="write each fp32/w8/w8a8 mode's dense part as ONNX (TensorRT Q/DQ placement) to DIR/<mode>/ "
                        "with io.json (input/output names and shapes); checked with onnx.checker")
    p.add_argument("--max-eval-frames", type=int, default=None,
                   help="evaluate only the first N val frames (ground truth restricted to them)")
    p.add_argument("--reconstruct", default=None, metavar="|".join(RECONSTRUCT_METHODS),
                   help="after calibration, learn each quantized mode's weight rounding on the calibration frames "
                        "(ptq.reconstruct: adaround per layer, brecq per block, qdrop = brecq with dropped "
                        "activation quantization); the calibration file stores the learned weights")
    p.add_argument("--reconstruct-iters", type=int, default=100, metavar="N",
                   help="optimisation steps per layer / block of --reconstruct (default 100)")
    p.add_argument("--task-loss", action="store_true",
                   help="with --reconstruct: add the backend's task-guided loss (CenterPoint heatmap peaks and "
                        "their box regression, float vs quantized model)")
    p.add_argument("--bits-budget", type=float, default=None, metavar="B",
                   help="mixed precision: promote the most sensitive layers (proxy sensitivity ranking) to 8-bit "
                        "weights while the average weight bits stay within B (e.g. 5 for a w4 mode)")
    return p


def preset_of(mode):
    """The ``ptq`` preset a mode quantizes and calibrates with (``w8a8-ort`` -> ``w8a8``)."""
    return RUNTIME_MODES.get(mode, mode)


def parse_modes(text):
    modes = [m.strip() for m in text.split(",") if m.strip()]
    known = ", ".join(list(PRESETS) + list(RUNTIME_MODES))
    if not modes:
        raise DriverError(f"--modes is empty; give a comma-separated list out of {known}")
    unknown = [m for m in modes if m not in PRESETS and m not in RUNTIME_MODES]
    if unknown:
        raise DriverError(f"--modes: unknown mode(s) {', '.join(unknown)}; choose from {known}")
    if len(set(modes)) != len(modes):
        raise DriverError(f"--modes lists a mode twice: {text}")
    return modes


def _positive(value, name):
    if value is not None and value < 1:
        raise DriverError(f"{name} must be a positive integer, got {value}")


def check_args(args):
    """Validate what can be validated before any framework is imported; fills defaults in place."""
    if args.framework not in FRAMEWORKS:
        raise DriverError(f"--framework: unknown framework {args.framework!r}; choose from {', '.join(FRAMEWORKS)}")
    if args.dataset not in DATASETS:
        raise DriverError(f"--dataset: unknown dataset {args.dataset!r}; choose from {', '.join(DATASETS)}")
    args.modes = parse_modes(args.modes)
    if args.calib_method not in CALIB_METHODS:
        raise DriverError(f"--calib-method: unknown method {args.calib_method!r}; "
                          f"choose from {', '.join(CALIB_METHODS)}")
    if not 0.0 < args.percentile <= 100.0:
        raise DriverError(f"--percentile must lie in (0, 100], got {args.percentile}")
    check_study_args(args)
    check_reconstruct_args(args)
    _positive(args.calib_batches, "--calib-batches")
    _positive(args.max_eval_frames, "--max-eval-frames")
    if args.launcher not in ("none", "pytorch"):
        raise DriverError(f"--launcher: unknown launcher {args.launcher!r}; choose none or pytorch")
    if args.launcher != "none" and args.data_root is None:
        raise DriverError("--launcher pytorch needs --data-root (a prepared dataset: ranks must not generate "
                          "the synthetic one concurrently)")
    if args.device not in ("cpu", "cuda"):
        raise DriverError(f"--device: unknown device {args.device!r}; choose cpu or cuda")
    waymo = args.dataset == "waymo"
    args.work_dir = check_work_dir(args.work_dir or (WAYMO_DEFAULTS["work_dir"] if waymo else DEFAULT_WORK_DIR))
    if args.export_onnx is not None:
        args.export_onnx = check_work_dir(args.export_onnx, "--export-onnx")
    if args.framework != "mmdet3d" and (args.export_onnx or any(m in RUNTIME_MODES for m in args.modes)):
        raise DriverError("--export-onnx and --modes w8a8-ort support --framework mmdet3d only")
    if args.framework == "openpcdet":
        # no embedded default for OpenPCDet; the config path may be relative to the OpenPCDet tree (checked there)
        if args.config is None or args.checkpoint is None:
            raise DriverError("--framework openpcdet needs --config (e.g. tools/cfgs/nuscenes_models/"
                              "cbgs_dyn_pp_centerpoint.yaml) and --checkpoint")
    else:
        args.config = resolve_mmdet3d_config(args.config or (WAYMO_DEFAULTS["config"] if waymo else DEFAULT_CONFIG))
        args.checkpoint = args.checkpoint or (WAYMO_DEFAULTS["checkpoint"] if waymo else DEFAULT_CHECKPOINT)
        _readable_file(args.config, "--config")
    _readable_file(args.checkpoint, "--checkpoint")
    if args.calib_file is not None and not os.path.exists(args.calib_file):
        raise DriverError(f"--calib-file: {args.calib_file} does not exist")
    return args


SENSITIVITY = ("proxy", "full", "both")


def check_reconstruct_args(args):
    """``--reconstruct``, ``--reconstruct-iters``, ``--task-loss`` and ``--bits-budget``."""
    if args.reconstruct is not None and args.reconstruct not in RECONSTRUCT_METHODS:
        raise DriverError(f"--reconstruct: unknown method {args.reconstruct!r}; choose from "
                          f"{', '.join(RECONSTRUCT_METHODS)}")
    if args.reconstruct_iters < 1:
        raise DriverError(f"--reconstruct-iters must be a positive integer, got {args.reconstruct_iters}")
    if args.task_loss and args.reconstruct is None:
        raise DriverError("--task-loss is a loss of --reconstruct; add --reconstruct adaround|brecq|qdrop")
    if args.bits_budget is not None and not args.bits_budget > 0:
        raise DriverError(f"--bits-budget must be a positive number of average weight bits, got {args.bits_budget}")
    used = [flag for flag, on in (("--reconstruct", args.reconstruct is not None),
                                  ("--bits-budget", args.bits_budget is not None)) if on]
    if not used:
        return
    if all(m == "fp32" for m in args.modes):
        raise DriverError(f"{' and '.join(used)} need a quantized mode; add one to --modes (e.g. fp32,w4)")
    if args.study or args.launcher != "none":
        raise DriverError(f"{' and '.join(used)} run in a normal single-process run (every process would learn "
                          f"its own weights); drop --study / --launcher")


def check_study_args(args):
    """``--study``, ``--calib-methods``, ``--skip-zeros [both]`` and ``--sensitivity`` (in place)."""
    if args.sensitivity is not None and args.sensitivity not in SENSITIVITY:
        raise DriverError(f"--sensitivity: unknown kind {args.sensitivity!r}; choose from {', '.join(SENSITIVITY)}")
    if args.skip_zeros not in (True, False, "both"):
        raise DriverError(f"--skip-zeros takes no value or 'both', got {args.skip_zeros!r}")
    if not args.study:
        if args.skip_zeros == "both" or args.calib_methods is not None:
            raise DriverError("--skip-zeros both and --calib-methods need --study (a normal run uses one "
                              "--calib-method)")
        return
    text = args.calib_methods if args.calib_methods is not None else ",".join(CALIB_METHODS)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CALIB_METHODS]
    if not methods or unknown or len(set(methods)) != len(methods):
        raise DriverError(f"--calib-methods: give distinct methods out of {', '.join(CALIB_METHODS)}, got {text!r}")
    args.calib_methods = methods
    if args.sensitivity is not None:
        raise DriverError("--sensitivity is not part of --study (its plot shows each layer's SQNR already); run it "
                          "without --study on the configuration the study chose")
    if args.launcher != "none":
        raise DriverError("--study runs in one process (its bootstrap needs every frame's detections in one "
                          "place); drop --launcher")
    if args.calib_file is not None and not os.path.isdir(args.calib_file):
        raise DriverError(f"--calib-file: with --study give a directory of calib_<mode>_<method>.json files, "
                          f"not {args.calib_file}")


def check_work_dir(path, option="--work-dir"):
    """``path`` made absolute; it must be a directory or creatable as one (nothing is created here)."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise DriverError(f"{option}: {path} is a file, not a directory; choose another {option}")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise DriverError(f"{option}: {path} lies under the file {existing}; choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created (no write access to {existing})"
        raise DriverError(f"{option}: {path} {what}; choose another {option}")
    return path


def resolve_mmdet3d_config(path):
    """``path`` itself when it exists, else a config of that name shipped with mmdet3d
    (``mmdet3d/.mim/configs/**/<name>``, e.g. ``centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py``)."""
    if os.path.exists(path) or os.path.dirname(path):
        return path
    spec = importlib.util.find_spec("mmdet3d")
    if spec is None or not spec.origin:
        return path
    found = glob.glob(os.path.join(os.path.dirname(spec.origin), ".mim", "configs", "**", path), recursive=True)
    return found[0] if len(found) == 1 else path


def _readable_file(path, name):
    if not os.path.isfile(path):
        raise DriverError(f"{name}: {path} is not a file")
    if not os.access(path, os.R_OK):
        raise DriverError(f"{name}: {path} is not readable")
