"""The Waymo protocol-buffer modules, or one clear error naming the set-up command."""
import importlib

SETUP_COMMAND = 'bash scripts/setup_waymo.sh'


class WaymoEnvironmentError(RuntimeError):
    """A package or environment that the Waymo tools need is missing."""


def waymo_module(name):
    """Import ``waymo_open_dataset.<name>`` (e.g. ``dataset_pb2``, ``protos.metrics_pb2``)."""
    try:
        return importlib.import_module(f'waymo_open_dataset.{name}')
    except ImportError as exc:
        raise WaymoEnvironmentError(
            f'waymo_open_dataset.{name} cannot be imported ({exc}); install the Waymo packages with '
            f'`{SETUP_COMMAND}`') from None
