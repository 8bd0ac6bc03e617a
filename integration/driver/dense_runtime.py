"""The driver's ONNX steps: ``--export-onnx DIR`` and the ``w8a8-ort`` mode (real INT8 through onnxruntime).

``export_mode(...)`` writes one mode's dense-part graphs to ``DIR/<mode>/`` (``onnx_runtime.write_graphs``).
``onnxruntime_model(...)`` exports the calibrated model's dense part, lowers it for onnxruntime
(``onnx_runtime.lower_for_onnxruntime``), says how many layers onnxruntime runs with INT8 kernels, times the dense
part of the fp32 torch model, of onnxruntime on the fp32 graphs and of onnxruntime INT8 on the same frame
(interleaved, medians), and returns the detector whose dense part runs in onnxruntime.
"""
import collections
import os

import torch

from integration.driver import onnx_runtime
from integration.driver.errors import DriverError

__all__ = ["ONNX_FRAMEWORKS", "exporter", "export_mode", "onnxruntime_model"]

#: frameworks whose dense part the driver can export
ONNX_FRAMEWORKS = ("mmdet3d",)
LATENCY_REPEATS = 7


def exporter(backend):
    """The dense-part exporter module of ``backend``."""
    if backend.name not in ONNX_FRAMEWORKS:
        raise DriverError(f"ONNX export (--export-onnx, --modes ...-ort) supports --framework "
                          f"{', '.join(ONNX_FRAMEWORKS)} only, not {backend.name}")
    try:
        import onnx  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
        import onnxruntime  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    except ImportError as err:
        raise DriverError(f"ONNX export needs the onnx and onnxruntime packages ({err}); pip install onnx "
                          f"onnxruntime") from None
    from integration.backends.mmdet3d import dense_export  # pylint: disable=import-outside-toplevel
    return dense_export


def export_mode(backend, model, example, forward, directory, mode):
    """Write ``mode``'s dense-part graphs and io.json to ``directory/mode``; returns the folder."""
    graphs, keys = exporter(backend).export_graphs(model, example, forward)
    folder = os.path.join(directory, mode)
    onnx_runtime.write_graphs(folder, graphs, extra={"mode": mode, "head_outputs": keys})
    print(f"exported {', '.join(g.name for g in graphs)} of {mode} to {folder}")
    return folder


def _sessions(graphs, threads):
    return {g.name: onnx_runtime.OrtGraph(g, threads) for g in graphs}


def _ort_fn(sessions, voxel_args, bev):
    def run():
        if "voxel_encoder" in sessions:
            sessions["voxel_encoder"](*voxel_args)
        sessions["dense"](bev)
    return run


def onnxruntime_model(backend, model, float_model, example, forward):
    """``(detector with its dense part in onnxruntime, info dict)`` for the calibrated ``model``; prints the
    INT8 kernel counts and the dense-part latencies (see the module docstring)."""
    import onnxruntime  # pylint: disable=import-outside-toplevel
    dense = exporter(backend)
    threads = torch.get_num_threads()
    graphs, keys = dense.export_graphs(model, example, forward)
    sessions = _sessions(graphs, threads)
    counts = collections.Counter()
    for session in sessions.values():
        counts.update(onnx_runtime.kernel_counts(session.onnx, threads))
    print(f"onnxruntime {onnxruntime.__version__} CPU provider, {threads} thread(s): "
          f"{onnx_runtime.describe_kernels(counts)}")
    float_graphs, _ = dense.export_graphs(float_model, example, forward)
    float_sessions = _sessions(float_graphs, threads)
    voxel_args, bev = dense.dense_inputs(float_model, example)
    ms = onnx_runtime.median_ms({"fp32 torch": dense.torch_dense_fn(float_model, voxel_args, bev),
                                 "fp32 onnxruntime": _ort_fn(float_sessions, voxel_args, bev),
                                 "INT8 onnxruntime": _ort_fn(sessions, voxel_args, bev)}, LATENCY_REPEATS)
    print(f"dense part ({' + '.join(g.name for g in graphs)}), median of {LATENCY_REPEATS} on one frame: "
          + ", ".join(f"{name} {value:.1f} ms" for name, value in ms.items())
          + f"; INT8 onnxruntime / fp32 torch = {ms['INT8 onnxruntime'] / ms['fp32 torch']:.2f}")
    info = {"dense_ms": ms, "int8_kernels": {k: counts[k] for k in onnx_runtime.INT8_KERNELS if counts[k]},
            "kernels": dict(counts)}
    return dense.onnxruntime_detector(model, sessions, keys), info
