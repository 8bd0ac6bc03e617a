"""The one exception type the driver turns into a one-line message and a non-zero exit."""


class DriverError(Exception):
    """Bad input or an unusable environment; ``str(err)`` is the whole message shown to the user."""
