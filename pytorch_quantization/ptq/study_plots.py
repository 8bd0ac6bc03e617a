"""PNG plots of a quantization study: metric differences with intervals, per-class AP deltas, per-layer clipping.

Every function writes one PNG atomically and returns True, or prints why and returns False when matplotlib is
not installed (it is optional: ``pip install matplotlib``).
"""
import math

from pytorch_quantization.ptq.atomic_io import atomic_write

__all__ = ["plot_deltas", "plot_class_deltas", "plot_layers"]


def _pyplot(what):
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        print(f"study plots: matplotlib is not installed; skipping the {what} plot (pip install matplotlib)")
        return None
    return plt


def _save(plt, fig, path):
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return True


def plot_deltas(results, path, metric="mAP"):
    """Horizontal error bars of ``{label: BootstrapResult}`` (difference to the baseline with its interval).

    Resolved differences (interval excludes 0) are drawn filled, the others hollow.
    """
    plt = _pyplot("differences")
    if plt is None:
        return False
    labels = list(results)
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(labels) + 1.6))
    for y, label in enumerate(labels):
        r = results[label]
        ax.errorbar([r.delta], [y], xerr=[[r.delta - r.low], [r.high - r.delta]], fmt="o", capsize=4,
                    color="C3" if r.excludes_zero else "C0", mfc="C3" if r.excludes_zero else "white")
    ax.axvline(0.0, color="grey", lw=1)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    conf = next(iter(results.values())).confidence if results else 0.95
    ax.set_xlabel(f"{metric} difference to the baseline ({100 * conf:.0f}% paired bootstrap interval)")
    ax.set_title(f"{metric}: filled = interval excludes 0")
    return _save(plt, fig, path)


def plot_class_deltas(deltas, path, metric="AP"):
    """Grouped bars of ``{configuration: {class: delta}}`` (per-class difference to the baseline)."""
    plt = _pyplot("per-class")
    if plt is None:
        return False
    configs = list(deltas)
    classes = list(dict.fromkeys(c for per_class in deltas.values() for c in per_class))  # first-seen order
    width = 0.8 / max(1, len(configs))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(classes) + 2), 4.0))
    for k, config in enumerate(configs):
        xs = [i + (k - (len(configs) - 1) / 2) * width for i in range(len(classes))]
        ax.bar(xs, [deltas[config].get(c, math.nan) for c in classes], width=width, label=config)
    ax.axhline(0.0, color="grey", lw=1)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_ylabel(f"{metric} difference to the baseline")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_layers(layers, clipped, sqnr_db, path, title="per-layer clipping and SQNR"):
    """Two panels over ``layers`` (names): clipped fraction of calibration values (log scale) and SQNR (dB).

    ``clipped`` / ``sqnr_db``: ``{layer: value}`` (missing, NaN and zero clipped fractions are left blank).
    """
    plt = _pyplot("per-layer")
    if plt is None:
        return False
    xs = range(len(layers))
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(max(6.0, 0.3 * len(layers) + 2), 6.0))
    fractions = [clipped.get(n, math.nan) for n in layers]
    top.bar(xs, [v if v > 0 else math.nan for v in fractions], color="C3")  # 0 (nothing clipped): no bar
    top.set_yscale("log")
    top.set_ylabel("clipped fraction (no bar: none)")
    top.set_title(title)
    bottom.bar(xs, [sqnr_db.get(n, math.nan) for n in layers], color="C0")
    bottom.set_ylabel("SQNR (dB)")
    bottom.set_xticks(list(xs))
    bottom.set_xticklabels(layers, rotation=90, fontsize=6)
    return _save(plt, fig, path)
