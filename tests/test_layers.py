"""Layers against independent numpy references written in pixel coordinates, and their
serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import (
    DiagonalBiLSTM,
    DiagonalLSTM,
    MaskedConv2D,
    PixelCNNBlock,
    RecurrentBlock,
    RowLSTM,
)
from pixelrnn_tf.lstm_cell import lstm_update, sweep_right_to_left


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_reference(z, c_prev):
    """Paper eq. 3: [o, f, i] sigmoid, g tanh."""
    h = c_prev.shape[-1]
    o, f, i, g = (z[..., k * h:(k + 1) * h] for k in range(4))
    c = sigmoid(f) * c_prev + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def row_lstm_reference(gates, kernel, h0, c0):
    """gates [B, H, W, 4h], kernel [3, h, 4h] -> [B, H, W, h]."""
    b, height, width, four_h = gates.shape
    units = four_h // 4
    out = np.zeros((b, height, width, units))
    h_prev = np.broadcast_to(h0, (b, width, units))
    c_prev = np.broadcast_to(c0, (b, width, units))
    for i in range(height):
        padded = np.pad(h_prev, ((0, 0), (1, 1), (0, 0)))  # zeros left and right of the row
        z = gates[:, i] + sum(padded[:, k:k + width] @ kernel[k] for k in range(3))
        h_prev, c_prev = lstm_reference(z, c_prev)
        out[:, i] = h_prev
    return out


def diagonal_lstm_reference(gates, kernel, h0, c0):
    """Left-to-right diagonal LSTM in pixel coordinates: cell (i, j) reads h(i - 1, j) (above)
    and h, c(i, j - 1) (left); outside the image the state is (h0, c0).
    gates [B, H, W, 4h], kernel [2h, 4h] (rows [:h] above, [h:] left) -> [B, H, W, h]."""
    b, height, width, four_h = gates.shape
    units = four_h // 4
    hs = np.zeros((b, height, width, units))
    cs = np.zeros((b, height, width, units))
    for i in range(height):
        for j in range(width):
            up = hs[:, i - 1, j] if i > 0 else np.broadcast_to(h0, (b, units))
            left_h = hs[:, i, j - 1] if j > 0 else np.broadcast_to(h0, (b, units))
            left_c = cs[:, i, j - 1] if j > 0 else np.broadcast_to(c0, (b, units))
            z = gates[:, i, j] + np.concatenate([up, left_h], -1) @ kernel
            hs[:, i, j], cs[:, i, j] = lstm_reference(z, left_c)
    return hs


def randomize(layer, rng):
    for w in layer.weights:
        w.assign(rng.normal(scale=0.5, size=w.shape).astype(np.float32))


def test_lstm_update_content_gate_is_tanh(rng):
    z = rng.normal(size=(5, 8)) * 3
    c = rng.normal(size=(5, 2))
    h_new, c_new = lstm_update(tf.constant(z), tf.constant(c))
    h_ref, c_ref = lstm_reference(z, c)
    np.testing.assert_allclose(c_new, c_ref, rtol=1e-6)
    np.testing.assert_allclose(h_new, h_ref, rtol=1e-6)


def test_row_lstm_against_reference(rng):
    layer = RowLSTM(4, colour_groups=1)
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    layer(x)
    randomize(layer, rng)
    gates = layer.input_to_state(x).numpy()
    expected = row_lstm_reference(gates, layer.state_kernel.numpy(), layer.initial_h.numpy(),
                                  layer.initial_c.numpy())
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)


def test_diagonal_lstm_against_reference(rng):
    """Catches a 2x1 state-to-state kernel padded on the wrong side and a sigmoid g."""
    layer = DiagonalLSTM(3, colour_groups=1)
    x = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
    layer(x)
    randomize(layer, rng)
    gates = layer.input_to_state(x).numpy()
    expected = diagonal_lstm_reference(gates, layer.state_kernel.numpy()[0],
                                       layer.initial_h.numpy()[0], layer.initial_c.numpy()[0])
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5)


def test_diagonal_bilstm_against_reference(rng):
    """Right-to-left = the reference on the mirrored map, mirrored back, shifted DOWN a row."""
    layer = DiagonalBiLSTM(3, colour_groups=1)
    x = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    layer(x)
    randomize(layer, rng)
    gates = np.split(layer.input_to_state(x).numpy(), 2, axis=-1)
    kernel, h0, c0 = (w.numpy() for w in (layer.state_kernel, layer.initial_h,
                                          layer.initial_c))
    left = diagonal_lstm_reference(gates[0], kernel[0], h0[0], c0[0])
    right = diagonal_lstm_reference(gates[1][:, :, ::-1], kernel[1], h0[1], c0[1])[:, :, ::-1]
    right_down = np.pad(right, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
    np.testing.assert_allclose(layer(x).numpy(), left + right_down, atol=1e-5)


def test_conditioning_is_added_to_input_to_state(rng):
    layer = RowLSTM(2)
    x = rng.normal(size=(1, 3, 3, 2)).astype(np.float32)
    cond = rng.normal(size=(1, 3, 3, 8)).astype(np.float32)
    layer(x)
    gates = layer.input_to_state(x).numpy() + cond
    expected = row_lstm_reference(gates, layer.state_kernel.numpy(), layer.initial_h.numpy(),
                                  layer.initial_c.numpy())
    np.testing.assert_allclose(layer(x, conditioning=cond).numpy(), expected, atol=1e-5)


def test_masked_conv_mask_is_applied_in_forward_pass_not_stored(rng):
    layer = MaskedConv2D(1, 3, mask_type="A")
    x = np.zeros((1, 3, 3, 1), np.float32)
    x[0, 2, 2, 0] = 1.0  # a pixel after the centre of output (1, 1)
    layer(x)
    layer.kernel.assign(np.ones((3, 3, 1, 1), np.float32))  # even with every weight set
    assert layer(x).numpy()[0, 1, 1, 0] == 0.0
    assert np.all(layer.kernel.numpy() == 1.0)  # stored weights untouched


def pixel_by_pixel(block, x, conditioning=None):
    """A block's cached steps driven in raster order over x [B, H, W, D] (every input pixel
    final) -> [B, H, W, 2h], what `block(x, conditioning)` must give."""
    batch, height, width, _ = x.shape
    weights = block.step_weights(tf.float32)
    cache = block.initial_cache(batch, width, tf.float32)
    rows = []
    for i in range(height):
        cache, row = block.start_row(weights, cache, i)
        outputs = []
        for j in range(width):
            cond = None if conditioning is None else conditioning[:, i, j]
            y, update = block.call_pixel(weights, cache, row, j, x[:, i, j], cond)
            cache = block.commit_pixel(weights, cache, j, update)
            outputs.append(y)
        cond_row = None if conditioning is None else tf.transpose(conditioning[:, i], (1, 0, 2))
        sweep = block.row_sweep(weights, cache, cond_row)
        if sweep is not None:
            cache = block.finish_row(weights, cache, sweep_right_to_left([sweep])[0])
        rows.append(tf.stack(outputs, 1))
    return tf.stack(rows, 1)


BLOCKS = {  # name: (make, width of its conditioning map)
    "diagonal_bilstm": (lambda: RecurrentBlock("diagonal_bilstm", 3, colour_groups=3), 12),
    "row_lstm": (lambda: RecurrentBlock("row_lstm", 3, colour_groups=3, residual=False,
                                        row_kernel=5), 12),
    "pixelcnn": (lambda: PixelCNNBlock(3, colour_groups=3), 3),
}


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("conditioned", [False, True])
def test_block_pixel_steps_equal_call(name, conditioned, rng):
    """keras-hub's cache test: each block's one-pixel steps (cached sampling) give its full
    call at every position; every weight random, the learned initial states included."""
    make, cond_dim = BLOCKS[name]
    block = make()
    x = tf.constant(rng.normal(size=(2, 4, 5, 6)), tf.float32)
    cond = (tf.constant(rng.normal(size=(2, 4, 5, cond_dim)), tf.float32) if conditioned
            else None)
    block(x, conditioning=cond)
    randomize(block, rng)
    np.testing.assert_allclose(pixel_by_pixel(block, x, cond), block(x, conditioning=cond),
                               rtol=0, atol=1e-5)


LAYERS = [
    (lambda: MaskedConv2D(6, 3, mask_type="A", colour_groups=3), (2, 4, 4, 3)),
    (lambda: RowLSTM(3, colour_groups=3, kernel_size=5), (2, 4, 4, 6)),
    (lambda: DiagonalLSTM(3, colour_groups=3), (2, 4, 4, 6)),
    (lambda: DiagonalBiLSTM(3, colour_groups=3), (2, 4, 4, 6)),
    (lambda: RecurrentBlock("diagonal_bilstm", 3, colour_groups=3), (2, 4, 4, 6)),
    (lambda: RecurrentBlock("row_lstm", 3, colour_groups=3, residual=False), (2, 4, 4, 6)),
    (lambda: PixelCNNBlock(3, colour_groups=3), (2, 4, 4, 6)),
]


@pytest.mark.parametrize("make,shape", LAYERS)
def test_layer_config_round_trip(make, shape, rng):
    layer = make()
    x = rng.normal(size=shape).astype(np.float32)
    out = layer(x)
    randomize(layer, rng)
    out = layer(x).numpy()
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    clone(x)
    assert clone.get_config() == layer.get_config()
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), out, atol=1e-6)
