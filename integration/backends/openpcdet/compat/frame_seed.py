"""Reproducible frames: OpenPCDet prepares a frame with the global, unseeded numpy RNG, at test time too
(nuScenes picks its sweeps with ``np.random.choice``; configs such as ``cbgs_dyn_pp_centerpoint`` keep
``shuffle_points`` on for 'test'). The point order changes the summation order in the VFE, hence activations
in their last bits, hence calibrated amaxes and (for a weak model) metrics from one run to the next, and
between a one-process and a distributed run.

``seed_frames(dataset)`` makes ``dataset[index]`` run with numpy's RNG seeded from the frame itself (its
``token``, else its ``lidar_path``, else ``index``) and restores the global RNG state afterwards: a frame
comes out the same whatever process loads it and whatever was loaded before. The draws keep their
distribution (the same sweeps-and-shuffle procedure, only with a fixed seed per frame). Done by giving the
instance a subclass of its own class that only adds this ``__getitem__`` (the DataLoader indexes the
dataset through its type).
"""
import zlib

import numpy as np

__all__ = ["seed_frames", "frame_seed"]

_SEEDED_CLASSES = {}


def frame_seed(info, index):
    """A 32-bit seed that depends only on the frame (``info``), or on ``index`` when ``info`` names none."""
    key = index
    if isinstance(info, dict):
        key = info.get("token", info.get("lidar_path", index))
    return zlib.crc32(str(key).encode("utf-8"))


def _seeded_class(cls):
    if cls not in _SEEDED_CLASSES:
        def __getitem__(self, index):
            infos = getattr(self, "infos", None)
            info = infos[index % len(infos)] if infos else None
            saved = np.random.get_state()
            np.random.seed(frame_seed(info, index))
            try:
                return cls.__getitem__(self, index)
            finally:
                np.random.set_state(saved)

        _SEEDED_CLASSES[cls] = type(cls.__name__, (cls,), {"__getitem__": __getitem__, "seeded_per_frame": True,
                                                           "__module__": cls.__module__})
    return _SEEDED_CLASSES[cls]


def seed_frames(dataset):
    """See the module docstring; returns ``dataset`` (its class swapped in place, once)."""
    if not getattr(type(dataset), "seeded_per_frame", False):
        dataset.__class__ = _seeded_class(type(dataset))
    return dataset
