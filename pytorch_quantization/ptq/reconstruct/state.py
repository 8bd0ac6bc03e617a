"""Resumable reconstruction: the result of every finished block saved in ``resume_dir``.

``manifest.json`` holds the run's settings and the finished block names; ``block_NNNN.pt`` holds a block's
learned integer weights and activation ranges. Both are written atomically after each block, so an
interrupted run restarts after its last finished block.
"""
import io
import json
import os

import torch

from pytorch_quantization.ptq.atomic_io import atomic_write, atomic_write_text

__all__ = ["ResumeState"]

_FORMAT = "pytorch_quantization.ptq.reconstruct.state"


class ResumeState:
    """Finished blocks of a run in ``folder`` (``None``: nothing is saved)."""

    def __init__(self, folder, settings):
        self.folder = folder
        self.settings = settings
        self.done = []
        if folder is None:
            return
        os.makedirs(folder, exist_ok=True)
        manifest = os.path.join(folder, "manifest.json")
        if os.path.exists(manifest):
            with open(manifest, encoding="utf-8") as f:
                doc = json.load(f)
            if doc.get("format") != _FORMAT or doc.get("settings") != settings:
                raise ValueError(f"resume_dir {folder} holds a reconstruction with other settings or blocks "
                                 f"({doc.get('settings')}); use an empty folder for this run")
            self.done = list(doc["done"])

    def _path(self, index):
        return os.path.join(self.folder, f"block_{index:04d}.pt")

    def load(self, index):
        """``(integer weights by layer, amax by quantizer name)`` saved for block ``index``."""
        doc = torch.load(self._path(index), weights_only=True)
        return doc["weights"], doc["amax"]

    def save(self, index, name, weights, amax):
        if self.folder is None:
            return
        buffer = io.BytesIO()
        torch.save({"weights": {k: v.cpu() for k, v in weights.items()},
                    "amax": {k: v.cpu() for k, v in amax.items()}}, buffer)
        atomic_write(self._path(index), lambda f: f.write(buffer.getvalue()))
        self.done.append(name)
        atomic_write_text(os.path.join(self.folder, "manifest.json"),
                          json.dumps({"format": _FORMAT, "settings": self.settings, "done": self.done}, indent=1))
