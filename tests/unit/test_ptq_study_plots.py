"""Study plots: PNG files written with matplotlib, a clear skip without it."""
import sys

import pytest

from pytorch_quantization.ptq import study_plots
from pytorch_quantization.ptq.stats import paired_bootstrap

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results():
    a = [0.1 * i for i in range(20)]
    return {"w8": paired_bootstrap(lambda f: sum(f) / len(f), a, [x + 0.01 for x in a], n=50),
            "w8a8": paired_bootstrap(lambda f: sum(f) / len(f), a, [x - 0.3 * (i % 2) for i, x in enumerate(a)],
                                     n=50)}


def _calls(tmp_path):
    return [
        (study_plots.plot_deltas, (_results(), tmp_path / "deltas.png")),
        (study_plots.plot_class_deltas, ({"w8": {"car": 0.01, "truck": -0.02}, "w8a8": {"car": -0.05}},
                                         tmp_path / "classes.png")),
        (study_plots.plot_layers, (["a", "b"], {"a": 0.0, "b": 0.01}, {"a": 30.0, "b": 12.5},
                                   tmp_path / "layers.png")),
    ]


def test_plots_are_png_files(tmp_path):
    pytest.importorskip("matplotlib", reason="the plots need matplotlib")
    for fn, args in _calls(tmp_path):
        assert fn(*args) is True
        with open(args[-1], "rb") as f:
            assert f.read(8) == PNG_MAGIC


def test_without_matplotlib_the_plots_are_skipped_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    for fn, args in _calls(tmp_path):
        assert fn(*args) is False
        assert not args[-1].exists()
    assert capsys.readouterr().out.count("matplotlib is not installed") == 3
