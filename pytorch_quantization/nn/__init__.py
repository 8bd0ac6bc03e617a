"""Quantized ``torch.nn`` modules, the ``TensorQuantizer`` and ``Clip`` (upstream-compatible names)."""
from pytorch_quantization.nn.modules.tensor_quantizer import *  # noqa: F401,F403
from pytorch_quantization.nn.modules.quant_conv import *  # noqa: F401,F403
from pytorch_quantization.nn.modules.quant_linear import *  # noqa: F401,F403
from pytorch_quantization.nn.modules.quant_pooling import *  # noqa: F401,F403
from pytorch_quantization.nn.modules.clip import *  # noqa: F401,F403
from pytorch_quantization.nn.modules.quant_rnn import *  # noqa: F401,F403
from pytorch_quantization.nn.modules.quant_instancenorm import *  # noqa: F401,F403
from pytorch_quantization.nn.modules._utils import QuantActMixin, QuantMixin, QuantInputMixin  # noqa: F401
from pytorch_quantization.nn import functional  # noqa: F401
