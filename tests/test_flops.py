"""The FLOP count of `pixelrnn_tf.flops` against a hand count of a tiny model."""

import numpy as np
import tensorflow as tf

from pixelrnn_tf import PixelRNN, flops


def built(architecture, **kwargs):
    model = PixelRNN(architecture, image_shape=(5, 4, 1), levels=2, num_layers=1,
                     hidden_dim=2, **kwargs)
    model.log_prob(tf.zeros((1, 5, 4, 1), tf.int32))
    return model


def test_diagonal_bilstm_count_by_hand():
    """One Diagonal BiLSTM layer, h=2, 5x4x1, 2 levels, skip connections, first kernel 7."""
    model = built("diagonal_bilstm")
    h, cells = 2, 5 * 4
    out = model.get_config().get("output_dim") or 32
    per_cell = (7 * 7 * 1 * 2 * h          # first 7x7 convolution, 1 -> 2h
                + 2 * h * 4 * h * 2         # input-to-state 1x1, 2h -> 4h per direction
                + 2 * h * 4 * h * 2         # state-to-state, [h above, h beside] -> 4h, x2
                + h * 2 * h                 # output 1x1 convolution, h -> 2h
                + 2 * h * 2 * h             # skip 1x1, 2h -> 2h
                + 2 * h * out + out * 2)    # output_hidden and the logits (2 levels)
    assert flops.forward_flops(model) == 2 * per_cell * cells
    assert flops.forward_flops(model, batch=3) == 3 * 2 * per_cell * cells
    assert flops.train_step_flops(model, 3) == 3 * flops.forward_flops(model, 3)


def test_row_lstm_counts_its_state_kernel():
    """The Row LSTM's 1x3 state-to-state kernel [3, h, 4h] adds 2 * 12 h^2 per cell."""
    row, diagonal = built("row_lstm", row_kernel=3), built("diagonal_bilstm")
    h, cells = 2, 5 * 4
    input_to_state = {"row_lstm": 3 * 2 * h * 4 * h, "diagonal_bilstm": 2 * h * 4 * h * 2}
    state = {"row_lstm": 3 * h * 4 * h, "diagonal_bilstm": 2 * 2 * h * 4 * h}
    difference = sum(v["row_lstm"] - v["diagonal_bilstm"] for v in (input_to_state, state))
    assert flops.forward_flops(row) - flops.forward_flops(diagonal) == 2 * difference * cells


def test_matmul_peak_is_positive_and_finite():
    peak = flops.matmul_peak_gflops(size=256, repeats=3)
    assert np.isfinite(peak) and peak > 0
