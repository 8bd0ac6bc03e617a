"""Logging helpers (upstream keeps ``reset_logger_handler`` for code that installs its own root handlers)."""
import logging

__all__ = ["reset_logger_handler"]


def reset_logger_handler():
    """Remove every handler of the root logger (for libraries that add one and break your log format)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
