"""Package version: above upstream's last release (2.2.1) so pip replaces an installed upstream."""
__version__ = "2.3.0.dev0"
