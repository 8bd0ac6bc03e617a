"""Peak memory of one phase of the driver (calibration, evaluation).

``with PeakMemory(device) as peak: ...`` then ``peak.mib``: on CUDA the largest ``torch.cuda.max_memory_allocated``
during the phase; on CPU the resident-set high-water mark of the process during the phase. Linux lets a process
reset that mark (writing ``5`` to ``/proc/self/clear_refs``) and read it back (``VmHWM`` in
``/proc/self/status``), so each phase gets its own peak. Where that is impossible the peak is the process's
lifetime maximum (``resource.getrusage``), and ``peak.since_start`` says so.
"""
import resource
import sys

import torch

from integration.driver.allocator import release_freed_memory

__all__ = ["PeakMemory"]

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _reset_rss_peak():
    """Reset the resident high-water mark; False when the platform does not allow it."""
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mib(resettable):
    if resettable:
        with open(_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB elsewhere


class PeakMemory:
    """Context manager measuring the peak memory (MiB) of the code it wraps (see the module docstring)."""

    def __init__(self, device="cpu"):
        self.cuda = device == "cuda" and torch.cuda.is_available()
        self.mib = None
        self.since_start = False

    @property
    def kind(self):
        """What ``mib`` measures: ``"cuda"`` (allocated tensors) or ``"rss"`` (resident set)."""
        return "cuda" if self.cuda else "rss"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            release_freed_memory()  # what allocator.keep_freed_memory kept from earlier phases is not this one's
            self.since_start = not _reset_rss_peak()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / (1024.0 * 1024.0)
        else:
            self.mib = _rss_peak_mib(not self.since_start)
        return False
