"""Atomic file writes: temp file in the same folder, then rename."""
import errno
import os
import tempfile


def atomic_write_text(path, text):
    """Write ``text`` to a temp file beside ``path`` and rename it over ``path``."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write(path, write_fn):
    """Call ``write_fn(binary_file)`` on a temp file in ``path``'s folder, then rename it to ``path``.

    A crash or exception leaves any previous file at ``path`` untouched.

    Errors name ``path`` (never the temp file): ``IsADirectoryError`` when ``path`` is a folder,
    ``FileNotFoundError`` / ``NotADirectoryError`` when its folder is missing or is a file, and so on.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder; pass the path of a file to write", path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=folder)
    except OSError as err:
        raise _naming(err, path, f"cannot create a file in {folder}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; give the file ordinary permissions
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise _naming(err, path, "cannot replace it") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _naming(err, path, what):
    """``err`` re-made (same class and errno) so that it names ``path``, the file the caller asked for."""
    return type(err)(err.errno, f"{what} ({err.strerror})", path)
