"""Quantized LSTM and LSTMCell (subclasses of the torch modules: same arguments and parameter names).

Keyword-only extras: ``quant_desc_input``, ``quant_desc_weight``, ``quant_act``. Each layer and
direction of ``QuantLSTM`` has its own quantizers in ``_input_quantizers`` / ``_weight_quantizers``
(state_dict keys ``_input_quantizers.<i>._amax``, as upstream). Projections (``proj_size``) are not
supported.
"""
import torch
from torch.nn.modules import rnn
from torch.nn.utils.rnn import PackedSequence

from pytorch_quantization import tensor_quant
from pytorch_quantization.nn._functions import quant_rnn
from pytorch_quantization.nn.modules import _utils

__all__ = ["QuantLSTM", "QuantLSTMCell", "LSTM", "LSTMCell"]


def _check_hidden(h, expected, label):
    if tuple(h.shape) != tuple(expected):
        raise RuntimeError(f"Expected hidden{label} size {tuple(expected)}, got {tuple(h.shape)}")


def _check_cell_hidden(inputs, h, hidden_size, label):
    if inputs.size(0) != h.size(0):
        raise RuntimeError(f"Input batch size {inputs.size(0)} doesn't match hidden{label} batch size {h.size(0)}")
    if h.dim() != 2 or h.size(1) != hidden_size:
        raise RuntimeError(f"hidden{label} has inconsistent hidden_size: got {tuple(h.shape)[1:]}, expected "
                           f"{hidden_size}")


class QuantLSTM(_utils.QuantMixin, rnn.LSTM):
    """Quantized multi-layer LSTM (also takes PackedSequence, unbatched and batch_first inputs)."""

    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW

    def __init__(self, *args, quant_desc_input=None, quant_desc_weight=None, quant_act=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.proj_size:
            raise ValueError(f"proj_size is not supported in pytorch-quantization yet (got proj_size={self.proj_size}); "
                             "use proj_size=0")
        self.init_quantizer(quant_desc_input, quant_desc_weight, num_layers=self.num_layers * self._directions,
                            quant_act=quant_act)

    @property
    def _directions(self):
        return 2 if self.bidirectional else 1

    def forward(self, input, hx=None):  # pylint: disable=redefined-builtin,arguments-renamed
        packed = isinstance(input, PackedSequence)
        sorted_indices = unsorted_indices = None
        unbatched = False
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            steps = list(data.split(batch_sizes.tolist()))
            batch = int(batch_sizes[0])
            features = data.size(-1)
        else:
            if input.dim() not in (2, 3):
                raise RuntimeError(f"input must have 3 dimensions, got {input.dim()} (shape {tuple(input.shape)}); a "
                                   "2-D input is taken as one unbatched sequence")
            unbatched = input.dim() == 2
            seq = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
            steps = list(seq.unbind(0))
            batch, features = seq.size(1), seq.size(2)
        if features != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {features}")

        state_shape = (self.num_layers * self._directions, batch, self.hidden_size)
        if hx is None:
            ref = steps[0]
            zeros = torch.zeros(state_shape, dtype=ref.dtype, device=ref.device)
            hx = (zeros, zeros)
        else:
            h0, c0 = hx
            if unbatched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            if sorted_indices is not None:
                h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
            _check_hidden(h0, state_shape, "[0]")
            _check_hidden(c0, state_shape, "[1]")
            hx = (h0, c0)

        missing_biases = () if self.bias else (None, None)
        layer_weights = [tuple(getattr(self, n) for n in names) + missing_biases for names in self._all_weights]
        out_steps, (h_n, c_n) = quant_rnn.stacked_lstm(
            steps, hx, layer_weights, self._directions, self.dropout, self.training,
            self._input_quantizers if self._quant_act else None, self._weight_quantizers)

        if packed:
            if unsorted_indices is not None:
                h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
            return PackedSequence(torch.cat(out_steps), batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)
        output = torch.stack(out_steps)
        if unbatched:
            return output.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n, c_n)


class QuantLSTMCell(_utils.QuantMixin, rnn.LSTMCell):
    """Quantized LSTM cell."""

    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW

    def __init__(self, *args, quant_desc_input=None, quant_desc_weight=None, quant_act=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_quantizer(quant_desc_input, quant_desc_weight, quant_act=quant_act)

    def forward(self, input, hx=None):  # pylint: disable=redefined-builtin,arguments-renamed
        if input.dim() not in (1, 2):
            raise ValueError(f"QuantLSTMCell expects a 1-D (unbatched) or 2-D input, got shape {tuple(input.shape)}")
        unbatched = input.dim() == 1
        if unbatched:
            input = input.unsqueeze(0)
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)}, expected {self.input_size}")
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            hx = (zeros, zeros)
        elif unbatched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        for h, label in zip(hx, ("[0]", "[1]")):
            _check_cell_hidden(input, h, self.hidden_size, label)
        h, c = quant_rnn.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                                   self._input_quantizer if self._quant_act else None, self._weight_quantizer)
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)


LSTM = QuantLSTM
LSTMCell = QuantLSTMCell
