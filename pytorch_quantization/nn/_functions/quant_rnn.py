"""Quantized LSTM computation in plain PyTorch ops.

As in upstream, one input quantizer sees the fused activation ``cat([x_t, h_{t-1}], 1)`` of each
time step and one weight quantizer sees the fused weight ``cat([W_ih, W_hh], 1)``, which is what
a single fused GEMM per step consumes at inference time.
"""
import torch
import torch.nn.functional as F

__all__ = ["lstm_cell", "stacked_lstm"]


def lstm_cell(x, hidden, w_ih, w_hh, b_ih=None, b_hh=None, input_quantizer=None, weight_quantizer=None):
    """One LSTM step: returns ``(h, c)``. Quantizers that are None are skipped."""
    hx, cx = hidden
    if input_quantizer is not None:
        x, hx = input_quantizer(torch.cat([x, hx], 1)).split([x.size(1), hx.size(1)], 1)
    if weight_quantizer is not None:
        w_ih, w_hh = quantize_fused_weight(weight_quantizer, w_ih, w_hh)
    gates = F.linear(x, w_ih, b_ih) + F.linear(hx, w_hh, b_hh)
    in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, 1)
    cy = torch.sigmoid(forget_gate) * cx + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
    hy = torch.sigmoid(out_gate) * torch.tanh(cy)
    return hy, cy


def quantize_fused_weight(weight_quantizer, w_ih, w_hh):
    """``(W_ih, W_hh)`` quantized together as ``cat([W_ih, W_hh], 1)``."""
    return weight_quantizer(torch.cat([w_ih, w_hh], 1)).split([w_ih.size(1), w_hh.size(1)], 1)


def _run_direction(steps, h, c, weights, input_quantizer, reverse):
    """Run one direction over ``steps`` (a list of ``[batch_t, features]`` tensors with non-increasing
    batch_t, as in a PackedSequence). Sequences that are not active at a step keep their state, which
    gives the right final state for both directions."""
    outputs = [None] * len(steps)
    order = range(len(steps) - 1, -1, -1) if reverse else range(len(steps))
    for t in order:
        b = steps[t].size(0)
        hb, cb = lstm_cell(steps[t], (h[:b], c[:b]), *weights, input_quantizer=input_quantizer)
        outputs[t] = hb
        if b == h.size(0):
            h, c = hb, cb
        else:
            h, c = torch.cat([hb, h[b:]]), torch.cat([cb, c[b:]])
    return outputs, h, c


def stacked_lstm(steps, hx, layer_weights, num_directions, dropout, training, input_quantizers, weight_quantizers):
    """Multi-layer (bi)directional LSTM over a list of time steps.

    Args:
        steps: list of ``[batch_t, input_size]`` tensors.
        hx: ``(h0, c0)``, each ``[num_layers * num_directions, batch, hidden]``.
        layer_weights: per layer and direction ``(w_ih, w_hh, b_ih, b_hh)`` (biases may be None).
        input_quantizers: per layer and direction, or None to leave activations unquantized.
        weight_quantizers: per layer and direction.

    Returns:
        ``(output steps, (h_n, c_n))``.
    """
    h0, c0 = hx
    num_layers = len(layer_weights) // num_directions
    h_n, c_n = [], []
    for layer in range(num_layers):
        per_direction = []
        for direction in range(num_directions):
            idx = layer * num_directions + direction
            w_ih, w_hh, b_ih, b_hh = layer_weights[idx]
            w_ih, w_hh = quantize_fused_weight(weight_quantizers[idx], w_ih, w_hh)
            in_q = None if input_quantizers is None else input_quantizers[idx]
            outputs, h, c = _run_direction(steps, h0[idx], c0[idx], (w_ih, w_hh, b_ih, b_hh), in_q, direction == 1)
            per_direction.append(outputs)
            h_n.append(h)
            c_n.append(c)
        steps = [torch.cat(parts, 1) for parts in zip(*per_direction)] if num_directions > 1 else per_direction[0]
        if dropout and layer < num_layers - 1:
            steps = [F.dropout(s, p=dropout, training=training) for s in steps]
    return steps, (torch.stack(h_n), torch.stack(c_n))
