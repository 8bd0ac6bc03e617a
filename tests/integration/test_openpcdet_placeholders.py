"""Import-time placeholders and the CPU fallbacks, on a miniature OpenPCDet-shaped package tree written
here (the real OpenPCDet is not installable in CI). Each case runs in a fresh interpreter so the fake
``pcdet`` never leaks into this process."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import REPO  # noqa: E402

FAKE_TREE = {
    "pcdet/__init__.py": "from .version import __version__\n",
    "pcdet/ops/__init__.py": "",
    "pcdet/ops/iou3d_nms/__init__.py": "",
    "pcdet/ops/iou3d_nms/iou3d_nms_utils.py": textwrap.dedent("""\
        from . import iou3d_nms_cuda

        def nms_gpu(boxes, scores, thresh, pre_maxsize=None, **kwargs):
            return iou3d_nms_cuda.nms_gpu(boxes, scores, thresh)

        def nms_normal_gpu(boxes, scores, thresh, **kwargs):
            return iou3d_nms_cuda.nms_normal_gpu(boxes, scores, thresh)

        def boxes_iou3d_gpu(boxes_a, boxes_b):
            return iou3d_nms_cuda.boxes_overlap_bev_gpu(boxes_a, boxes_b)
        """),
    "pcdet/ops/roiaware_pool3d/__init__.py": "",
    "pcdet/ops/roiaware_pool3d/roiaware_pool3d_utils.py": textwrap.dedent("""\
        from . import roiaware_pool3d_cuda

        def points_in_boxes_cpu(points, boxes):
            return roiaware_pool3d_cuda.points_in_boxes_cpu(boxes, points)

        def points_in_boxes_gpu(points, boxes):
            return roiaware_pool3d_cuda.points_in_boxes_gpu(boxes, points)
        """),
    "pcdet/entry.py": textwrap.dedent("""\
        import json, sys
        import torch
        from pcdet.ops.iou3d_nms import iou3d_nms_utils

        if __name__ == "__main__":
            boxes = torch.tensor([[0., 0, 0, 2, 2, 2, 0], [0.1, 0, 0, 2, 2, 2, 0]]).cuda()
            keep, _ = iou3d_nms_utils.nms_gpu(boxes, torch.tensor([0.2, 0.8]).cuda(), 0.5)
            print(json.dumps({"argv": sys.argv[1:], "keep": keep.tolist()}))
        """),
    "tools/.keep": "",
}


def run_in_fake_tree(tmp_path, code):
    for rel, text in FAKE_TREE.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_missing_extensions_import_and_raise_only_when_called(tmp_path):
    out = run_in_fake_tree(tmp_path, """
        import json
        from integration.backends.openpcdet.compat import placeholders
        placeholders.install()
        import pcdet
        from pcdet.ops.iou3d_nms import iou3d_nms_utils
        try:
            iou3d_nms_utils.nms_gpu(None, None, 0.5)
            error = None
        except placeholders.MissingOpError as err:
            error = str(err)
        print(json.dumps({"version": pcdet.__version__, "error": error, "served": placeholders.served(),
                          "placeholder": placeholders.is_placeholder(iou3d_nms_utils.iou3d_nms_cuda)}))
    """)
    assert out["version"] == "0+source"
    assert out["placeholder"] is True
    assert "pcdet.ops.iou3d_nms.iou3d_nms_cuda.nms_gpu" in out["error"] and "setup.py develop" in out["error"]
    assert out["served"] == ["pcdet.version", "pcdet.ops.iou3d_nms.iou3d_nms_cuda"]


def test_without_placeholders_the_import_fails(tmp_path):
    out = run_in_fake_tree(tmp_path, """
        import json
        try:
            import pcdet
            result = "imported"
        except ImportError as err:
            result = type(err).__name__
        print(json.dumps({"result": result}))
    """)
    assert out["result"] in ("ImportError", "ModuleNotFoundError")


def test_fallbacks_dispatch_cpu_tensors_to_the_cpu_versions(tmp_path):
    out = run_in_fake_tree(tmp_path, """
        import json, math, torch
        from integration.backends.openpcdet.compat import placeholders
        placeholders.install()
        from integration.backends.openpcdet.compat.fallbacks import install_cpu_fallbacks
        done = install_cpu_fallbacks()
        again = install_cpu_fallbacks()
        from pcdet.ops.iou3d_nms import iou3d_nms_utils as u
        from pcdet.ops.roiaware_pool3d import roiaware_pool3d_utils as r
        boxes = torch.tensor([[0., 0, 0, 2, 2, 2, 0], [0.2, 0, 0, 2, 2, 2, 0.1], [9., 9, 0, 1, 1, 1, 0]])
        scores = torch.tensor([0.5, 0.9, 0.1])
        keep, _ = u.nms_gpu(boxes, scores, 0.5)
        keep_normal, _ = u.nms_normal_gpu(boxes, scores, 0.5)
        iou = u.boxes_iou3d_gpu(boxes[:1], boxes[:1])
        pts = torch.tensor([[[0., 0, 0], [9, 9, 0], [5, 5, 5]]])
        idx = r.points_in_boxes_gpu(pts, boxes[None])
        mask = r.points_in_boxes_cpu(pts[0].numpy(), boxes.numpy())
        print(json.dumps({"keep": keep.tolist(), "keep_normal": keep_normal.tolist(), "iou": iou.item(),
                          "idx": idx.tolist(), "mask": mask.tolist(), "same": done == again,
                          "numpy_int": __import__("numpy").int is int}))
    """)
    assert out["keep"] == [1, 2] and out["keep_normal"] == [1, 2]  # box 0 overlaps the better box 1
    assert abs(out["iou"] - 1.0) < 1e-6
    assert out["idx"] == [[0, 2, -1]]
    assert out["mask"] == [[1, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert out["same"] is True and out["numpy_int"] is True


def test_optional_package_placeholder_names_what_to_install(tmp_path):
    out = run_in_fake_tree(tmp_path, """
        import json, importlib.util
        installed = importlib.util.find_spec("av2") is not None
        from integration.backends.openpcdet.compat import placeholders
        placeholders.install()
        from av2.utils.io import read_feather
        try:
            read_feather("x")
            error = None
        except placeholders.MissingOpError as err:
            error = str(err)
        print(json.dumps({"installed": installed, "error": error}))
    """)
    if out["installed"]:
        return  # the real package answered, as it must
    assert "av2.utils.io.read_feather" in out["error"] and "pip install av2" in out["error"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA .cuda() is not remapped and the compiled op would "
                                                      "run; this checks the CPU path")
def test_run_module_runs_an_entry_point_without_compiled_ops(tmp_path):
    run_in_fake_tree(tmp_path, "print('{}')")  # writes the tree
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "integration.backends.openpcdet.compat.run_module", "--pcdet-root", str(tmp_path),
                           "pcdet.entry", "--func", "x"], env=env, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"argv": ["--func", "x"], "keep": [1]}  # .cuda() stayed on the CPU, the CPU NMS ran
