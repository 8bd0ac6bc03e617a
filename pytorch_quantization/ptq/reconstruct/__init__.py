"""Learned rounding and block reconstruction after calibration: AdaRound, BRECQ, QDrop (``reconstruct``), and the
task-guided loss for CenterPoint heads (``centerpoint_task_loss``).

Modules: ``api`` (``reconstruct``), ``rounding`` (AdaRound's soft rounding), ``act_quant`` (learned activation
step sizes, QDrop), ``blocks`` (which layers go together), ``cache`` (float block inputs / outputs),
``losses``, ``state`` (resume). The learned integers are stored by ``ptq.weight_payload``.

Note: ``pytorch_quantization.ptq.reconstruct`` names this package, but ``ptq.reconstruct`` (the attribute of
``ptq``) is the function; import other names from the package (``from pytorch_quantization.ptq.reconstruct
import centerpoint_task_loss``) or from ``ptq`` (``ptq.centerpoint_task_loss``).
"""
from pytorch_quantization.ptq.reconstruct.api import reconstruct, METHODS
from pytorch_quantization.ptq.reconstruct.losses import centerpoint_task_loss, output_loss

__all__ = ["reconstruct", "METHODS", "centerpoint_task_loss", "output_loss"]
