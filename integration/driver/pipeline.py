"""The one PTQ mode loop, the same for every backend (``integration.backends.base.Backend``).

``run(args)``: check the options -> lock the work dir -> ``prepare`` (import the framework, load and check config
and data, build the float model, load weights, check ``--skip-layers`` and every reused calibration file) ->
for each mode a FRESH copy of the float model is (optionally BN-folded,) quantized with the
``pytorch_quantization.ptq`` preset of that name (layers, then the residual adds of known detector blocks),
calibrated on a seeded subset of the training split or loaded from ``--calib-file``, its calibration saved with
the settings that produced it, evaluated on the val split (timed) -> one table, results.md / results.json.
A runtime mode (``w8a8-ort``) evaluates its preset's calibrated model with the dense part in onnxruntime
(``dense_runtime``); ``--export-onnx`` writes each fp32/w8/w8a8 model's dense part as ONNX. The table gives the
peak memory of each calibration and evaluation (``memory.PeakMemory``).

Stale outputs (results, sensitivity tables, calibration files not reused by this run) are removed when the run
starts, so an interrupted run never leaves old results beside new calibration files. Every forward runs inside
``ptq.plugins.spconv.bias_after_sparse_conv`` when spconv is installed (float sparse convolutions with a bias
on a CPU). Under ``--launcher pytorch`` only rank 0 locks the work dir and writes files.
"""
import contextlib
import copy
import glob
import os
import time

from integration import backends
from integration.data.prepare import MissingDependency, ensure_synthetic_nuscenes
from integration.data.prepare_waymo import ensure_synthetic_waymo
from integration.driver import allocator, calib_files, dense_runtime, distributed, options, reconstruction
from integration.driver.errors import DriverError
from integration.driver.lock import work_dir_lock
from integration.driver.memory import PeakMemory
from integration.driver.results import build_table, write_results
from integration.driver.sensitivity import layer_sensitivity
from pytorch_quantization.ptq.weight_payload import sidecar_path

__all__ = ["run", "prepare", "compare_modes", "quantize", "quantize_and_calibrate", "STALE_PATTERNS"]

#: outputs of an earlier run in the work dir, removed when a run starts (calibration files it reuses are kept)
STALE_PATTERNS = ("results.md", "results.json", "results.csv", "study_*.png", "sensitivity_*.md", "calib_*.json",
                  "calib_*.weights.pt")


def sparse_bias(model):
    """``bias_after_sparse_conv(model)`` when spconv is installed, else a no-op context."""
    from pytorch_quantization import ptq
    if not ptq.HAS_SPCONV:
        return contextlib.nullcontext()
    from pytorch_quantization.ptq.plugins.spconv import bias_after_sparse_conv
    return bias_after_sparse_conv(model)


def one_thread_for_sparse_convs(model, device):
    """A CPU run of a model with spconv layers uses one intra-op thread: spconv 2.3's CPU convolution races on
    more (identical calls differ; see ``pytorch_quantization/ptq/reconstruct/sparse_grad.py``). Says so once."""
    import torch
    from pytorch_quantization.ptq.layer_types import is_sparse_conv
    threads = torch.get_num_threads()
    if device == "cpu" and threads > 1 and any(is_sparse_conv(m) for m in model.modules()):
        torch.set_num_threads(1)
        if distributed.rank() == 0:
            print(f"the model has spconv layers, whose CPU convolution is not thread-safe: using 1 intra-op thread "
                  f"instead of {threads}")


def forward_fn(backend):
    """The backend's calibration forward inside ``sparse_bias``."""
    def forward(model, batch):
        with sparse_bias(model):
            return backend.calibration_forward(model, batch)
    return forward


def check_skip_layers(model, patterns):
    """Every ``--skip-layers`` pattern must name at least one module (glob on the dotted name, as ``ptq`` reads it)."""
    from pytorch_quantization.ptq.filters import NameFilter
    modules = [(n, m) for n, m in model.named_modules() if n]
    names = [n for n, _ in modules]
    for pattern in patterns:
        selects = NameFilter(pattern)
        if not any(selects.match(n, m) is not None for n, m in modules):
            near = [n for n in names if n.split(".")[0] == pattern.split(".")[0]][:3] or names[:3]
            raise DriverError(f"--skip-layers: {pattern!r} matches no module of the model; module names look like "
                              f"{', '.join(near)}")


def has_activation_quantizers(model):
    from pytorch_quantization import ptq
    return any(ref.role == "input" and ref.active for ref in ptq.find_quantizers(model))


def _load_calibration(model, mode, path, args):
    """Load a checked calibration file into ``model`` (after replaying its mixed precision); returns the file's
    metadata."""
    from pytorch_quantization import ptq
    doc_metadata = calib_files.check_file(path).get("metadata", {})
    calib_files.check_settings(path, mode, doc_metadata, args)
    reconstruction.replay(model, mode, doc_metadata, args)
    try:
        return ptq.load_calibration(model, path)
    except (ValueError, KeyError, TypeError) as err:
        raise DriverError(f"--calib-file: {path} does not fit mode {mode}: {err}".splitlines()[0]) from None


def quantize(model, mode, skip=None):
    """Quantize ``model`` in place with preset ``mode``: layers, then the residual adds of known detector blocks
    (none where the model has no such blocks). Returns the two summary tables."""
    from pytorch_quantization import ptq
    layers = ptq.quantize_model(model, mode, skip=skip)
    adds = ptq.quantize_residual_blocks(model, mode, skip=skip)
    return layers, adds


def quantize_and_calibrate(float_model, mode, args, calib_file, loader, example, backend):
    """``(model, calibration seconds, metadata to save)`` for ``mode``: a quantized copy of ``float_model``.

    Weight-only modes need no data (weight amax comes from the tensors): one batch is passed only because
    ``calibrate`` requires one. A reused file's metadata is kept as it is (it describes its amaxes). With
    ``--bits-budget`` / ``--reconstruct`` (``driver/reconstruction.py``) the seconds they took are in the
    metadata's ``reconstruct_s``.
    """
    from pytorch_quantization import ptq
    model = copy.deepcopy(float_model)
    forward = forward_fn(backend)
    if args.fold_bn:
        ptq.fold_batchnorm(model, example, forward_fn=forward)
    if mode == "fp32":
        return model, None, None
    float_ref = copy.deepcopy(model) if args.reconstruct is not None and calib_file is None else None
    layers, adds = quantize(model, mode, args.skip_layers or None)
    added = adds.column("status").count("residual add quantized")
    print(f"quantized {len(layers.swapped)} layers ({len(layers.left)} left float) and {added} residual adds")
    start = time.perf_counter()
    if calib_file is not None:
        metadata = _load_calibration(model, mode, calib_file, args)
    else:
        table = ptq.calibrate(model, loader, forward_fn=forward, method=args.calib_method, percentile=args.percentile,
                              skip_zeros=args.skip_zeros, num_batches=None if has_activation_quantizers(model) else 1)
        config = os.path.abspath(args.config) if os.path.isfile(args.config) else args.config  # pcdet: tree-relative
        metadata = dict(calib_files.run_settings(args), mode=mode, config=config, framework=args.framework)
        if getattr(table, "choices", None):  # --calib-method auto: the choice per quantizer
            metadata["auto_choices"] = table.choices
        if args.reconstruct is not None or args.bits_budget is not None:
            learned, seconds = reconstruction.apply(model, float_ref, mode, args, loader, example, forward, backend)
            metadata.update(learned, reconstruct_s=round(seconds, 3))
    return model, time.perf_counter() - start, metadata


def _calibration_frames(args, backend, cfg, files):
    """Frames the calibration loader draws: ``--calib-batches`` (default min(32, split)) when a mode calibrates
    from data, else one per process (BN-folding traces and sensitivity need an example batch)."""
    world = distributed.world_size()
    if any(f is None for f in files.values()):
        total = backend.split_size(cfg, "train")
        frames = args.calib_batches if args.calib_batches is not None else min(32, total)
        if frames < world:
            raise DriverError(f"--calib-batches {frames} is smaller than the number of processes ({world}); every "
                              f"process needs a calibration frame")
        return frames, frames
    return world, None


def prepare(args, backend, plan_files=calib_files.plan_files):
    """Every check and every object the comparison needs; DriverError before any result is written.

    ``plan_files(args)``: ``{mode or study combination: calibration file reused or None}``."""
    if args.data_root is None and args.framework == "mmdet3d":
        waymo = args.dataset == "waymo"
        args.data_root = options.WAYMO_DEFAULTS["data_root"] if waymo else options.DEFAULT_DATA_ROOT
        try:
            (ensure_synthetic_waymo if waymo else ensure_synthetic_nuscenes)(args.data_root)
        except (ValueError, MissingDependency) as err:
            raise DriverError(str(err).splitlines()[0]) from None
    stack = backend.import_stack()
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        raise DriverError("--device cuda: no CUDA device is available to this torch build; use --device cpu")
    distributed.init_distributed(args.launcher, args.device)
    if distributed.rank() == 0:
        print(stack + (f"; {distributed.world_size()} processes" if distributed.is_distributed() else ""))
    cfg = backend.load_config(args.config, args.data_root, args.work_dir)
    backend.check_data(cfg)
    if args.max_eval_frames is not None and args.max_eval_frames > backend.split_size(cfg, "val"):
        raise DriverError(f"--max-eval-frames {args.max_eval_frames} is larger than the val split "
                          f"({backend.split_size(cfg, 'val')} frames)")
    if args.device == "cpu" and not args.system_malloc:
        said = allocator.keep_freed_memory()
        if said and distributed.rank() == 0:
            print(said)
    float_model = backend.build_model(cfg, args.device)
    one_thread_for_sparse_convs(float_model, args.device)
    loaded = backend.load_weights(float_model, args.checkpoint)
    if distributed.rank() == 0:
        print(f"loaded {loaded} tensors from {args.checkpoint}")
    check_skip_layers(float_model, args.skip_layers)
    files = plan_files(args)
    loader_frames, calib_frames = _calibration_frames(args, backend, cfg, files)
    loader = backend.calibration_loader(cfg, loader_frames, args.seed, distributed.is_distributed())
    example = next(iter(loader))  # for BN-folding traces and sensitivity's output SQNR
    for mode, path in files.items():  # a reused file that does not fit stops the run before any work
        if path is not None and mode in args.modes:
            quantize_and_calibrate(float_model, options.preset_of(mode), args, path, None, example, backend)
    return dict(args=args, backend=backend, cfg=cfg, float_model=float_model, files=files,
                calib_frames=calib_frames, loader=loader, example=example)


def remove_stale_outputs(work_dir, keep):
    """Delete earlier runs' outputs (``STALE_PATTERNS``) in ``work_dir`` except the files in ``keep``."""
    keep = {os.path.realpath(p) for p in keep if p}
    keep |= {sidecar_path(p) for p in keep}  # a reused file's learned weights
    for pattern in STALE_PATTERNS:
        for path in glob.glob(os.path.join(work_dir, pattern)):
            if os.path.realpath(path) not in keep:
                os.unlink(path)


def _evaluate(backend, model, cfg, args, name):
    with sparse_bias(model):
        return backend.evaluate(model, cfg, args.work_dir, name, args.max_eval_frames, distributed.is_distributed())


def _calibrated_model(mode, args, prepared, cache):
    """``(model, calib seconds, peak memory MiB, metadata)`` of ``mode``'s preset: calibrated here (its file saved)
    or, for a preset an earlier mode of this run already calibrated (``w8a8`` then ``w8a8-ort``), that same model
    (metadata None)."""
    from pytorch_quantization import ptq
    preset = options.preset_of(mode)
    if preset in cache:
        return cache[preset], None, None, None
    with PeakMemory(args.device) as peak:
        model, calib_s, metadata = quantize_and_calibrate(
            prepared["float_model"], preset, args, prepared["files"].get(mode), prepared["loader"],
            prepared["example"], prepared["backend"])
    if preset != "fp32" and distributed.rank() == 0:
        ptq.save_calibration(model, os.path.join(args.work_dir, calib_files.calib_file_name(preset)),
                             metadata=metadata)
    if any(options.preset_of(m) == preset and m != mode for m in args.modes):
        cache[preset] = model
    return model, calib_s, peak.mib if calib_s is not None else None, metadata


def compare_modes(args, backend, cfg, float_model, files, calib_frames, loader, example):
    """Quantize, calibrate and evaluate a fresh copy per mode; write the table and calibration files."""
    main = distributed.rank() == 0
    columns = backend.metric_columns(cfg)
    prepared = dict(backend=backend, float_model=float_model, files=files, loader=loader, example=example)
    rows, sensitivities, cache, exported = [], {}, {}, set()
    for mode in args.modes:
        if main:
            print(f"== {mode} ==")
        model, calib_s, calib_mib, metadata = _calibrated_model(mode, args, prepared, cache)
        preset = options.preset_of(mode)
        if args.export_onnx and main and preset in ("fp32", "w8", "w8a8") and preset not in exported:
            dense_runtime.export_mode(backend, model, example, forward_fn(backend), args.export_onnx, preset)
            exported.add(preset)
        extra = {}
        if preset != "fp32":
            learned_here = metadata is not None and files.get(mode) is None  # not a reused file, not the cache
            extra.update(reconstruct=reconstruction.label(args, model),
                         reconstruct_s=metadata.get("reconstruct_s") if learned_here else None)
        if mode in options.RUNTIME_MODES:
            model, info = dense_runtime.onnxruntime_model(backend, model, float_model, example, forward_fn(backend))
            extra.update(info)
        with PeakMemory(args.device) as eval_peak:
            values, ms = _evaluate(backend, model, cfg, args, mode)
        rows.append(dict(mode=mode, **values, ms_per_frame=ms, calib_s=calib_s,
                         calib_peak_mib=calib_mib, eval_peak_mib=eval_peak.mib,
                         memory=eval_peak.kind, **extra))
        if args.sensitivity and mode not in ("fp32",) + tuple(options.RUNTIME_MODES):
            sensitivities.update(layer_sensitivity(
                model, mode, args.sensitivity, example, forward_fn(backend),
                lambda m: _evaluate(backend, m, cfg, args, "sensitivity")[0][columns[0]]))
    if not main:
        return
    table = build_table(rows, columns)
    print(table)
    run_info = dict(vars(args), calib_frames=calib_frames, columns=columns, processes=distributed.world_size())
    write_results(args.work_dir, table, rows, run_info)
    for mode, sens in sensitivities.items():
        sens.save(os.path.join(args.work_dir, f"sensitivity_{mode}.md"))
    print(f"wrote {os.path.join(args.work_dir, 'results.md')} and results.json")


def run(args, compare=None, plan_files=calib_files.plan_files):
    """The whole comparison for parsed command-line ``args`` (``options.build_parser``); ``compare`` (default
    ``compare_modes``) and ``plan_files`` let ``--study`` (``driver/study.py``) run its own loop on the same
    checks, lock and prepared objects."""
    args = options.check_args(args)
    backend = backends.create(args.framework, args.pcdet_root)
    distributed.check_launcher_env(args.launcher, args.framework, backend.single_node_only)
    try:
        with work_dir_lock(args.work_dir, owner=distributed.rank() == 0):
            prepared = prepare(args, backend, plan_files)
            if distributed.rank() == 0:
                remove_stale_outputs(args.work_dir, prepared["files"].values())
            (compare or compare_modes)(**prepared)
    finally:
        distributed.finish()
