"""Module-name filters: glob patterns, compiled regexes and callables, alone or in a list."""
import fnmatch
import re

__all__ = ["NameFilter"]


class NameFilter:
    """Decides which modules a ``skip`` (or ``layers``) argument selects.

    Accepts None (selects nothing), a glob pattern string (``fnmatch``, matched against the full dotted
    module name, e.g. ``"backbone.blocks.0.*"``), a compiled regex (``re.search`` on the name), a callable
    ``(name, module) -> bool``, or a list / tuple of those (selected when any selects).
    """

    def __init__(self, spec):
        if spec is None:
            spec = []
        elif isinstance(spec, (str, re.Pattern)) or callable(spec):
            spec = [spec]
        if not isinstance(spec, (list, tuple, set)):
            raise TypeError(f"expected glob pattern(s), compiled regex(es) or a callable(name, module), "
                            f"got {type(spec).__name__}")
        for item in spec:
            if not (isinstance(item, (str, re.Pattern)) or callable(item)):
                raise TypeError(f"filter entries must be glob strings, compiled regexes or callables, got {item!r}")
        self._items = list(spec)

    def __bool__(self):
        return bool(self._items)

    def __add__(self, other):
        """A filter selecting what either ``self`` or ``other`` (a NameFilter) selects."""
        return NameFilter(self._items + other._items)

    def match(self, name, module=None):
        """The entry that selects ``name`` (shown in summaries), or None."""
        for item in self._items:
            if isinstance(item, str):
                hit = fnmatch.fnmatchcase(name, item)
            elif isinstance(item, re.Pattern):
                hit = item.search(name) is not None
            else:
                hit = bool(item(name, module))
            if hit:
                return item
        return None

    @staticmethod
    def describe(item):
        if isinstance(item, str):
            return f"skip pattern {item!r}"
        if isinstance(item, re.Pattern):
            return f"skip regex {item.pattern!r}"
        return f"skip callable {getattr(item, '__name__', repr(item))}"
