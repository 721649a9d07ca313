"""The hand-written backward passes of the recurrent scans against autodiff of plain references.

`reference_scan` is the Diagonal LSTM written cell by cell in pixel coordinates with ordinary
TensorFlow ops (no skew, no phases, no custom gradient), `reference_row_scan` the Row LSTM row
by row; their gradients come from autodiff. The fast `diagonal_lstm_scan` and `row_lstm_scan`
must match them in value and in every gradient, in a tf.function (where, under a gradient
tape, the loops run as compiled XLA programs) and jit-compiled; for one and two directions,
shared and per-direction inputs, and row-window phases (forced on small images).
"""

import numpy as np
import pytest
import tensorflow as tf

from pixelrnn_tf import DiagonalBiLSTM, DiagonalLSTM
from pixelrnn_tf.diagonal_scan import diagonal_lstm_scan, phase_windows
from pixelrnn_tf.lstm_cell import lstm_update
from pixelrnn_tf.row_lstm import row_lstm_scan


def reference_scan(inputs, input_kernel, state_kernel, initial_h, initial_c, mirrored):
    """Same contract as `diagonal_lstm_scan`: [Dx, B, H, W, C] -> [D, B, H, W, u]."""
    num_dirs = input_kernel.shape[0]
    units = initial_h.shape[-1]
    _, batch, height, width, _ = inputs.shape
    outputs = []
    for d in range(num_dirs):
        x = inputs[0 if inputs.shape[0] == 1 else d]
        if mirrored[d]:
            x = tf.reverse(x, [2])
        gates_in = tf.einsum("bhwc,cg->bhwg", x, input_kernel[d])
        h0 = tf.broadcast_to(initial_h[d], (batch, units))
        c0 = tf.broadcast_to(initial_c[d], (batch, units))
        hs, cs = {}, {}
        for i in range(height):
            for j in range(width):
                up = hs[i - 1, j] if i > 0 else h0
                left_h, left_c = (hs[i, j - 1], cs[i, j - 1]) if j > 0 else (h0, c0)
                z = gates_in[:, i, j] + tf.concat([up, left_h], -1) @ state_kernel[d]
                o, f, g_i = (tf.sigmoid(z[:, k * units:(k + 1) * units]) for k in range(3))
                g = tf.tanh(z[:, 3 * units:])
                cs[i, j] = f * left_c + g_i * g
                hs[i, j] = o * tf.tanh(cs[i, j])
        out = tf.stack([tf.stack([hs[i, j] for j in range(width)], 1) for i in range(height)], 1)
        outputs.append(tf.reverse(out, [2]) if mirrored[d] else out)
    return tf.stack(outputs)


def reference_row_scan(gates_in, state_kernel, initial_h, initial_c):
    """Same contract as `row_lstm_scan`: [B, H, W, 4u] -> [B, H, W, u]."""
    batch, height, width, _ = gates_in.shape
    h = tf.broadcast_to(initial_h, (batch, width, initial_h.shape[0]))
    c = tf.broadcast_to(initial_c, h.shape)
    rows = []
    for i in range(height):
        padded = tf.pad(h, [[0, 0], [1, 1], [0, 0]])  # zero beyond the row ends
        z = gates_in[:, i] + sum(padded[:, k:k + width] @ state_kernel[k] for k in range(3))
        h, c = lstm_update(z, c)
        rows.append(h)
    return tf.stack(rows, 1)


def directional_gates(layer, inputs, conditioning=None):
    """A `DiagonalLSTM`'s input-to-state gates per direction, each in its own scanning frame:
    [B, H, W, Cin] -> [D, B, H, W, 4h], direction 1 mirrored along W."""
    gates = layer.input_to_state(inputs)
    gates = tf.stack(tf.split(gates, layer.num_directions, axis=-1))
    if conditioning is not None:
        gates = gates + conditioning[None]
    if layer.num_directions == 2:
        gates = tf.stack([gates[0], tf.reverse(gates[1], axis=[2])])
    return gates


def diagonal_scan(gates_in, state_kernel, initial_h, initial_c):
    """D diagonal LSTMs scanned left to right on precomputed gates [D, B, H, W, 4h] (an
    identity input kernel): -> [D, B, H, W, h]."""
    num_dirs, four_h = gates_in.shape[0], gates_in.shape[-1]
    cast = lambda v: tf.cast(v, gates_in.dtype)
    identity = tf.eye(four_h, batch_shape=[num_dirs], dtype=gates_in.dtype)
    return diagonal_lstm_scan(gates_in, identity, cast(state_kernel), cast(initial_h),
                              cast(initial_c), (False,) * num_dirs)


def random_arguments(rng, num_src, num_dirs, batch, height, width, channels, units):
    normal = lambda *shape: tf.constant(rng.normal(scale=0.5, size=shape), tf.float32)
    return (normal(num_src, batch, height, width, channels), normal(num_dirs, channels, 4 * units),
            normal(num_dirs, 2 * units, 4 * units), normal(num_dirs, units),
            normal(num_dirs, units))


def values_and_gradients(scan, args, weights, jit_compile=None):
    """Eagerly if jit_compile is None, else inside a tf.function."""
    def run(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = scan(*args)
            loss = tf.reduce_sum(out * weights)
        return out, tape.gradient(loss, args)

    return run(*args) if jit_compile is None else tf.function(run, jit_compile=jit_compile)(*args)


CASES = {
    # name: (num_src, mirrored, batch, height, width, channels, units, max_phases, modes)
    "bidirectional, shared input, phases": (1, (False, True), 2, 7, 4, 3, 2, 3, ("graph", "xla")),
    "one direction, wide, phases": (1, (True,), 2, 4, 7, 2, 2, 2, ("graph", "xla")),
    "per-direction inputs": (2, (False, True), 1, 3, 5, 2, 2, None, ("graph",)),
    "one row": (1, (False, True), 2, 1, 5, 2, 2, 2, ("xla",)),
    "one column": (1, (False, True), 3, 5, 1, 2, 2, 2, ("xla",)),
}


@pytest.mark.parametrize("case", CASES)
def test_values_and_gradients_match_autodiff_of_reference(case, rng):
    """graph: a tf.function (the loops run as XLA programs while the tape records);
    xla: a jit-compiled tf.function."""
    num_src, mirrored, batch, height, width, channels, units, max_phases, modes = CASES[case]
    args = random_arguments(rng, num_src, len(mirrored), batch, height, width, channels, units)
    weights = tf.constant(rng.normal(size=(len(mirrored), batch, height, width, units)),
                          tf.float32)
    fast = lambda *a: diagonal_lstm_scan(*a, mirrored, max_phases=max_phases)
    ref_out, ref_grads = values_and_gradients(lambda *a: reference_scan(*a, mirrored), args,
                                              weights)
    names = ["inputs", "input_kernel", "state_kernel", "initial_h", "initial_c"]
    for mode in modes:
        out, grads = values_and_gradients(fast, args, weights, jit_compile=mode == "xla")
        np.testing.assert_allclose(out, ref_out, atol=2e-6, err_msg=mode)
        for name, g, ref in zip(names, grads, ref_grads):
            np.testing.assert_allclose(g, ref, rtol=2e-5, atol=2e-5, err_msg=f"{mode}: d {name}")


@pytest.mark.parametrize("batch", [1, 3])
def test_row_lstm_values_and_gradients_match_autodiff_of_reference(batch, rng):
    """batch 3: two unequal halves run as two compiled loops; batch 1: one loop."""
    normal = lambda *shape: tf.constant(rng.normal(scale=0.5, size=shape), tf.float32)
    args = (normal(batch, 4, 5, 8), normal(3, 2, 8), normal(2), normal(2))
    weights = normal(batch, 4, 5, 2)
    ref_out, ref_grads = values_and_gradients(reference_row_scan, args, weights)
    for jit_compile in (False, True):
        out, grads = values_and_gradients(row_lstm_scan, args, weights, jit_compile)
        np.testing.assert_allclose(out, ref_out, atol=2e-6)
        for name, g, ref in zip(["gates_in", "state_kernel", "initial_h", "initial_c"], grads,
                                ref_grads):
            np.testing.assert_allclose(g, ref, rtol=2e-5, atol=2e-5,
                                       err_msg=f"jit_compile={jit_compile}: d {name}")


def test_gradients_match_finite_differences(rng):
    """Independent of any reference: the custom gradient against tf.test.compute_gradient."""
    args = [a.numpy().astype(np.float64) for a in random_arguments(rng, 1, 1, 1, 3, 2, 1, 1)]
    scan = tf.function(lambda *a: diagonal_lstm_scan(*a, (True,), max_phases=2))
    theoretical, numerical = tf.test.compute_gradient(scan, args, delta=1e-6)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=1e-8)


@pytest.mark.parametrize("height,width", [(1, 1), (6, 8), (28, 28), (32, 32), (5, 40)])
def test_phases_cover_every_pixel_and_skip_empty_corners(height, width):
    phases = phase_windows(height, width)
    steps = height + width - 1
    assert phases[0][0] == 0 and phases[-1][1] == steps
    assert all(a[1] == b[0] for a, b in zip(phases, phases[1:]))
    covered = set()
    for t0, t1, r0, r1 in phases:
        covered |= {(r, t - r) for t in range(t0, t1) for r in range(r0, r1) if 0 <= t - r < width}
    assert covered == {(r, j) for r in range(height) for j in range(width)}
    cells = sum((t1 - t0) * (r1 - r0) for t0, t1, r0, r1 in phases)
    assert cells <= height * steps
    if height == width == 28:
        assert len(phases) > 1 and cells < 0.7 * height * steps


def test_dynamic_batch_size(rng):
    """A batch dimension unknown while tracing (as in Keras fit) works, value and gradient."""
    layer = DiagonalBiLSTM(3)
    x = rng.normal(size=(3, 5, 6, 4)).astype(np.float32)
    expected = layer(x).numpy()

    @tf.function(input_signature=[tf.TensorSpec([None, 5, 6, 4])])
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
            loss = tf.reduce_sum(out)
        return out, tape.gradient(loss, [x] + layer.trainable_weights)

    out, grads = run(x)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)


def test_conditioning_gradient_and_old_gate_api(rng):
    """The conditioning map enters every direction's gates (identity block of the input
    kernel); `diagonal_scan` on `directional_gates` gives the layer's own result."""
    layer = DiagonalLSTM(2, num_directions=2)
    x = tf.constant(rng.normal(size=(2, 4, 5, 3)), tf.float32)
    cond = tf.constant(rng.normal(size=(2, 4, 5, 8)), tf.float32)
    layer(x)
    for w in layer.weights:
        w.assign(rng.normal(scale=0.5, size=w.shape))
    with tf.GradientTape() as tape:
        tape.watch(cond)
        out = layer(x, conditioning=cond)
        loss = tf.reduce_sum(out)
    d_cond = tape.gradient(loss, cond)
    assert np.abs(d_cond.numpy()).min() > 0
    gates = directional_gates(layer, x, cond)
    frames = diagonal_scan(gates, layer.state_kernel, layer.initial_h, layer.initial_c)
    from_gates = tf.stack([frames[0], tf.reverse(frames[1], [2])])
    np.testing.assert_allclose(out, from_gates, atol=2e-6)
