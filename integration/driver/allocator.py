"""Keep freed heap memory in the process for CPU runs (glibc only).

By default glibc gives large freed blocks back to the kernel (``munmap``, or trimming the heap top) and
the next frame's activations of the same size fault every page in again, zero-filled. On the embedded
default that was about 10,000 minor page faults and a fifth of fp32's ms/frame on one thread, and it
taxes every extra allocation (a quantized activation) again. ``keep_freed_memory`` raises glibc's
thresholds so that freed memory stays in the heap for reuse: the process keeps up to its peak heap
(plus ``TOP_PAD_BYTES``) instead of shrinking back after each frame. ``--system-malloc`` keeps
glibc's defaults.
"""
import ctypes
import platform

__all__ = ["keep_freed_memory", "release_freed_memory", "TRIM_THRESHOLD_BYTES", "MMAP_THRESHOLD_BYTES",
           "TOP_PAD_BYTES"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: the heap top is returned to the kernel only when this much of it is free
TRIM_THRESHOLD_BYTES = 1 << 30
#: blocks up to this size come from the heap, not from their own mmap (glibc's largest allowed value)
MMAP_THRESHOLD_BYTES = 32 << 20
#: extra memory requested each time the heap grows
TOP_PAD_BYTES = 64 << 20


def _glibc():
    """The process's C library when it is glibc, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(None)  # the C library this process already runs on


def keep_freed_memory():
    """Set glibc's malloc thresholds (module docstring). Returns a one-line description of what was set, or
    None where the C library is not glibc (nothing changed)."""
    libc = _glibc()
    if libc is None:
        return None
    settings = ((_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                (_M_TOP_PAD, TOP_PAD_BYTES))
    if not all(libc.mallopt(param, value) == 1 for param, value in settings):
        return None
    return (f"CPU allocator: freed memory stays in the heap for reuse (glibc trim threshold "
            f"{TRIM_THRESHOLD_BYTES >> 20} MiB, mmap threshold {MMAP_THRESHOLD_BYTES >> 20} MiB; --system-malloc "
            "keeps glibc's defaults)")


def release_freed_memory():
    """Give the heap's free memory back to the kernel now (``malloc_trim``), e.g. before measuring a phase's
    resident peak, so that memory kept from an earlier phase does not count. No-op where not glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
