"""Atomic file writes: temp file in the same folder, then rename."""
import os
import tempfile


def atomic_write_text(path, text):
    """Write ``text`` to a temp file beside ``path`` and rename it over ``path``."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write(path, write_fn):
    """Call ``write_fn(binary_file)`` on a temp file in ``path``'s folder, then rename it to ``path``.

    A crash or exception leaves any previous file at ``path`` untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
