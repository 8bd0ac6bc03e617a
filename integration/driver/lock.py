"""One run per work dir: ``work_dir_lock(path)`` holds ``<work_dir>/.centerpoint_ptq.lock`` while the run lasts.

The lock file is created exclusively (``O_CREAT | O_EXCL``) and holds the owner's pid and host. A second run on
the same work dir fails at once with a one-line error naming the owner; a lock left by a process that no longer
exists on this host (killed run) is taken over. Only rank 0 of a distributed run takes the lock.
"""
import contextlib
import os
import socket

from integration.driver.errors import DriverError

__all__ = ["LOCK_NAME", "work_dir_lock"]

LOCK_NAME = ".centerpoint_ptq.lock"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(path):
    """``(pid, host)`` written in the lock file, or None when it cannot be read (being written)."""
    try:
        with open(path, encoding="utf-8") as f:
            pid, host = f.read().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def _acquire(path):
    for _ in range(2):  # second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if owner is not None and owner[1] == socket.gethostname() and not _alive(owner[0]):
                os.unlink(path)  # left by a run that was killed
                continue
            who = f"process {owner[0]} on {owner[1]}" if owner else "another process"
            raise DriverError(f"--work-dir: {os.path.dirname(path)} is in use by {who} (lock file {path}); "
                              f"wait for that run, use another --work-dir, or remove the lock file if no run "
                              f"is active") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        return
    raise DriverError(f"--work-dir: cannot take the lock {path}")


@contextlib.contextmanager
def work_dir_lock(work_dir, owner=True):
    """Create ``work_dir`` and hold its lock while the block runs (``owner=False``: other ranks, no lock).

    A work dir this call created is removed again when the block fails and left it empty.
    """
    created = not os.path.isdir(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, LOCK_NAME)
    if owner:
        _acquire(path)
    try:
        yield
    except BaseException:
        _release(path, owner)
        if created and owner and not os.listdir(work_dir):
            os.rmdir(work_dir)
        raise
    _release(path, owner)


def _release(path, owner):
    if owner:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
