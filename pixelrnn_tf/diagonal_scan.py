"""The scan of the Diagonal LSTM (paper, section 3.2): D diagonal LSTMs over an image, one
`tf.while_loop` over the skewed columns, with a hand-written backward loop.

The input map is skewed (row r shifted right by r, width W + H - 1) so that each diagonal of
the image becomes a column; the loop scans the columns left to right. In skewed coordinates
the cell (r, t) is pixel (r, t - r); its previous column holds pixel (r, j - 1) (same row,
left) and, one row up, pixel (r - 1, j) (above). The 2x1 state-to-state convolution
therefore reads rows r - 1 and r of the previous column: the padding goes on TOP (a
"SAME"-padded 2x1 kernel pads the bottom and leaks the next row).

How the scan is made fast (`diagonal_lstm_scan`; the numbers are in the README):
- the skewed map is never built: each step gathers its column of the layer input, and one
  matmul computes the 1x1 input-to-state and the 2x1 state-to-state convolutions together;
- the columns are split into phases whose row windows skip the empty corners of the skewed
  map (half of it);
- a hand-written backward loop (`tf.custom_gradient`) replays the gate values stored by the
  forward loop and accumulates every weight gradient inside the loop;
- states are laid out [units, rows * batch], so every element-wise op runs over long
  contiguous vectors, and the gates use one tanh (sigmoid(z) = (1 + tanh(z / 2)) / 2);
- outside a jit-compiled function the loops still run as XLA programs while a gradient tape
  records (training), one per direction, so TensorFlow runs the two directions on two cores.
  Graphs traced without a tape (inference, SavedModel export) contain no XLA-only function:
  TF Serving runs XLA only behind an experimental flag.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from pixelrnn_tf.lstm_cell import (
    gate_scales,
    inside_xla,
    lstm_step,
    lstm_step_backward,
    run_loops_compiled,
)

MAX_PHASES = 6


def phase_windows(height, width, max_phases=None):
    """Splits the W + H - 1 skewed columns into phases that skip the empty corners.

    Column t holds pixels only in rows max(0, t - W + 1) .. min(t, H - 1). A phase covering
    columns [t0, t1) computes rows [max(0, t0 - W + 1), min(H, t1)); the boundaries minimise
    the number of computed cells (dynamic programming). Every phase is a loop to trace and
    compile: at most `max_phases`, by default `MAX_PHASES` and at most one per 9 columns.
    Returns a tuple of (t0, t1, r0, r1).
    """
    steps = height + width - 1
    if max_phases is None:
        max_phases = min(MAX_PHASES, steps // 9)
    max_phases = max(1, min(max_phases, steps))

    def cells(t0, t1):
        return (t1 - t0) * (min(height, t1) - max(0, t0 - width + 1))

    # best[p][t]: (fewest cells, previous boundary) to cover columns [0, t) with p phases
    best = [[None] * (steps + 1) for _ in range(max_phases + 1)]
    best[0][0] = (0, None)
    for p in range(1, max_phases + 1):
        for t1 in range(1, steps + 1):
            options = [(best[p - 1][t0][0] + cells(t0, t1), t0)
                       for t0 in range(t1) if best[p - 1][t0] is not None]
            best[p][t1] = min(options) if options else None
    p = min(range(1, max_phases + 1), key=lambda k: (best[k][steps][0], k))
    bounds = [steps]
    for k in range(p, 0, -1):
        bounds.append(best[k][bounds[-1]][1])
    bounds.reverse()
    return tuple((t0, t1, max(0, t0 - width + 1), min(height, t1))
                 for t0, t1 in zip(bounds[:-1], bounds[1:]))


class _Geometry(NamedTuple):
    """What a scan loop is specialised for (hashable: a static `tf.function` argument)."""
    height: int
    width: int
    channels: int  # C of the input map
    units: int
    mirrored: tuple  # one bool per direction of this loop
    shared_input: bool  # one input map for all directions (else one per direction)
    phases: tuple  # `phase_windows`


class _Layout:
    """Index helpers of one loop. Cells of a skewed column are stored [D, depth, R * B]:
    position s = (row - r0) * B + b, so element-wise ops run over long contiguous vectors."""

    def __init__(self, geo, batch, dtype):
        self.geo, self.batch, self.dtype = geo, batch, dtype
        self.num_dirs = len(geo.mirrored)
        self.mirror = tf.reshape(tf.constant(geo.mirrored), (self.num_dirs, 1, 1))
        dirs = tf.reshape(tf.range(self.num_dirs), (self.num_dirs, 1, 1))
        self.all_dirs = dirs
        self.source = dirs if not geo.shared_input else tf.zeros_like(dirs)

    def table(self, x):
        """[Dv, B, H, W, depth] -> [Dv * H * W * depth, B]: one gatherable row per value."""
        return tf.reshape(tf.transpose(x, (0, 2, 3, 4, 1)), tf.stack([-1, self.batch]))

    def column(self, rows_table, t, r0, r1, depth, dirs):
        """Skewed column t, rows [r0, r1), of a `table`: [D, depth, (r1 - r0) * B].

        Cells outside the image read a clamped (wrong but finite) pixel."""
        height, width = self.geo.height, self.geo.width
        rows = tf.range(r0, r1)[None, None, :]
        j = tf.clip_by_value(t - rows, 0, width - 1)
        j = tf.where(self.mirror, width - 1 - j, j)
        index = ((dirs * height + rows) * width + j) * depth + tf.range(depth)[None, :, None]
        return tf.reshape(tf.gather(rows_table, index), tf.stack([self.num_dirs, depth, -1]))

    def to_image(self, parts, depth):
        """Per-phase columns [t1 - t0, D, depth, (r1 - r0) * B] -> [D, B, H, W, depth]."""
        height, width, b = self.geo.height, self.geo.width, self.batch
        steps = height + width - 1
        full = tf.concat([tf.pad(part, [[0, 0], [0, 0], [0, 0], [r0 * b, (height - r1) * b]])
                          for part, (_, _, r0, r1) in zip(parts, self.geo.phases)], 0)
        full = tf.reshape(full, tf.stack([steps, self.num_dirs, depth, height, b]))
        full = tf.transpose(full, (3, 0, 1, 2, 4))  # [H, T, D, depth, B]
        # unskew: row r of length T, read with stride T + 1, starts at column r
        full = tf.reshape(full, tf.stack([height * steps, self.num_dirs, depth, b]))
        full = tf.pad(full, [[0, height], [0, 0], [0, 0], [0, 0]])
        full = tf.reshape(full, tf.stack([height, steps + 1, self.num_dirs, depth, b]))
        full = full[:, :width]  # [H, W, D, depth, B]
        mirror = tf.reshape(self.mirror, (1, 1, self.num_dirs, 1, 1))
        full = tf.where(mirror, tf.reverse(full, [1]), full)
        return tf.transpose(full, (2, 4, 0, 1, 3))

    def masks(self, r0, r1):
        """Per column t, over the window positions [R * B]: row started (t >= row) and
        cell inside the image (0 <= t - row < W)."""
        rows = r0 + tf.range((r1 - r0) * self.batch) // self.batch
        started = lambda t: tf.cast(rows <= t, self.dtype)
        inside = lambda t: tf.cast((rows <= t) & (rows > t - self.geo.width),
                                   self.dtype)
        return started, inside

    def shift_down(self, v, top):
        """[D, u, R * B]: row r takes row r - 1 (the cell above); row 0 takes `top` [D, u, B]."""
        return tf.concat([top, v[..., :-self.batch]], -1)

    def shift_up(self, v):
        return tf.pad(v[..., self.batch:], [[0, 0], [0, 0], [0, self.batch]])


def _matmul_per_direction(a, b, num_dirs, transpose_b=False):
    """tf.matmul of [D, m, k] and [D, k, n] (or [D, n, k] with transpose_b). With one
    direction (every plain loop: inference, SavedModels) it is a 2-D matmul, which made one
    layer's inference forward 1.5x faster than the batched matmul of batch 1
    (`benchmarks/scan_time.py`). With both directions in one loop (inside a jit-compiled
    step) it stays batched: two 2-D matmuls made that step slower (README, train-step
    benchmark)."""
    if num_dirs == 1:
        return tf.matmul(a[0], b[0], transpose_b=transpose_b)[None]
    return tf.matmul(a, b, transpose_b=transpose_b)


def _scan_forward(inputs, kernel, initial_h, initial_c, geo):
    """The forward loops. inputs [Dx, B, H, W, C]; kernel [D, 2u + C, 4u] (rows: state
    above, state beside, input); initial_h, initial_c [D, u].

    Returns hidden [D, B, H, W, u] and, per phase, what `_scan_backward` needs: per step h,
    the gate-derivative products q [4u], o * (1 - tanh(c)^2) and f; the window's start state
    and the row above it."""
    dtype = inputs.dtype
    batch = inputs.shape[1] if inputs.shape[1] is not None else tf.shape(inputs)[1]
    lay = _Layout(geo, batch, dtype)
    units = geo.units
    half, _ = gate_scales(units, dtype)
    inputs_table = lay.table(inputs)
    kernel_t = tf.transpose(kernel, (0, 2, 1))
    full_shape = tf.stack([lay.num_dirs, units, geo.height * batch])
    h_all = tf.broadcast_to(initial_h[:, :, None], full_shape)
    c_all = tf.broadcast_to(initial_c[:, :, None], full_shape)
    h0_row = tf.broadcast_to(initial_h[:, :, None], tf.stack([lay.num_dirs, units, batch]))
    hidden_parts, saved = [], []
    for t0, t1, r0, r1 in geo.phases:
        window = slice(r0 * batch, r1 * batch)
        h_start, c_start = h_all[..., window], c_all[..., window]
        top = h0_row if r0 == 0 else h_all[..., (r0 - 1) * batch: r0 * batch]
        started, _ = lay.masks(r0, r1)
        masked = r1 - 1 > t0  # some row of the window starts inside the phase

        def step(k, h, c, hs, qs, ws, fs, top=top, t0=t0, r0=r0, r1=r1, masked=masked,
                 started=started, h_start=h_start, c_start=c_start):
            t = t0 + k
            n = tf.concat([lay.shift_down(h, top), h,
                           lay.column(inputs_table, t, r0, r1, geo.channels, lay.source)], 1)
            # cells left of the image keep the initial state
            keep = (started(t), h_start, c_start) if masked else None
            gates = _matmul_per_direction(kernel_t, n, lay.num_dirs)
            h, c, (q, w, f) = lstm_step(gates, c, half, keep)
            return k + 1, h, c, hs.write(k, h), qs.write(k, q), ws.write(k, w), fs.write(k, f)

        arrays = tuple(tf.TensorArray(dtype, size=t1 - t0) for _ in range(4))
        out = tf.while_loop(lambda k, *_, n=t1 - t0: k < n, step, (0, h_start, c_start) + arrays,
                            maximum_iterations=t1 - t0)
        hs, qs, ws, fs = (a.stack() for a in out[3:])
        hidden_parts.append(hs)
        saved.append((hs, qs, ws, fs, h_start, top))
        h_all = tf.concat([h_all[..., : r0 * batch], out[1], h_all[..., r1 * batch:]], -1)
        c_all = tf.concat([c_all[..., : r0 * batch], out[2], c_all[..., r1 * batch:]], -1)
    return lay.to_image(hidden_parts, units), saved


def _scan_backward(inputs, kernel, initial_h, initial_c, saved, d_hidden, geo):
    """The backward loops: gradients of `_scan_forward` given d_hidden [D, B, H, W, u].

    Returns d_inputs [Dx, B, H, W, C], d_kernel [D, 2u + C, 4u], d_initial_h, d_initial_c."""
    dtype = inputs.dtype
    batch = inputs.shape[1] if inputs.shape[1] is not None else tf.shape(inputs)[1]
    lay = _Layout(geo, batch, dtype)
    units, channels = geo.units, geo.channels
    _, is_o = gate_scales(units, dtype)
    inputs_table = lay.table(inputs)
    d_table = lay.table(d_hidden)
    full_shape = tf.stack([lay.num_dirs, units, geo.height * batch])
    dh_all = tf.zeros(full_shape, dtype)  # d loss / d state after the phase being undone
    dc_all = tf.zeros(full_shape, dtype)
    h0_row = tf.broadcast_to(initial_h[:, :, None], tf.stack([lay.num_dirs, units, batch]))
    d_top0 = tf.zeros_like(h0_row)
    d_kernel = tf.zeros_like(kernel)
    d_columns = []
    for index in reversed(range(len(geo.phases))):
        t0, t1, r0, r1 = geo.phases[index]
        hs, qs, ws, fs, h_start, top = saved[index]
        window = slice(r0 * batch, r1 * batch)
        h_prev_all = tf.concat([h_start[None], hs[:-1]], 0)
        started, inside = lay.masks(r0, r1)
        masked = r1 - 1 > t0
        zeros = tf.zeros_like(dh_all[..., window])

        def back_step(k, dh, dc, rest_h, rest_c, d_top, d_kernel, dxs, t0=t0, t1=t1, r0=r0,
                      r1=r1, masked=masked, started=started, inside=inside, qs=qs, ws=ws,
                      fs=fs, top=top, h_prev_all=h_prev_all):
            t = t1 - 1 - k
            j = t - t0
            dh = dh + lay.column(d_table, t, r0, r1, units, lay.all_dirs) * inside(t)
            if masked:  # cells left of the image hold the window's start state
                m = started(t)
                rest_h, rest_c = rest_h + (1.0 - m) * dh, rest_c + (1.0 - m) * dc
                dh, dc = m * dh, m * dc
            dz, dc = lstm_step_backward(dh, dc, (qs[j], ws[j], fs[j]), is_o)
            h_prev = h_prev_all[j]
            n = tf.concat([lay.shift_down(h_prev, top), h_prev,
                           lay.column(inputs_table, t, r0, r1, channels, lay.source)], 1)
            d_kernel = d_kernel + _matmul_per_direction(n, dz, lay.num_dirs, transpose_b=True)
            dn = _matmul_per_direction(kernel, dz, lay.num_dirs)
            d_up = dn[:, :units]
            return (k + 1, dn[:, units:2 * units] + lay.shift_up(d_up), dc, rest_h, rest_c,
                    d_top + d_up[..., :batch], d_kernel, dxs.write(j, dn[:, 2 * units:]))

        out = tf.while_loop(
            lambda k, *_, n=t1 - t0: k < n, back_step,
            (0, dh_all[..., window], dc_all[..., window], zeros, zeros, tf.zeros_like(d_top0),
             d_kernel, tf.TensorArray(dtype, size=t1 - t0)),
            maximum_iterations=t1 - t0)
        _, dh, dc, rest_h, rest_c, d_top, d_kernel, dxs = out
        d_columns.append(dxs.stack())
        dh_all = tf.concat([dh_all[..., : r0 * batch], dh + rest_h, dh_all[..., r1 * batch:]], -1)
        dc_all = tf.concat([dc_all[..., : r0 * batch], dc + rest_c, dc_all[..., r1 * batch:]], -1)
        if r0 == 0:
            d_top0 = d_top0 + d_top
        else:
            pad = [[0, 0], [0, 0], [(r0 - 1) * batch, (geo.height - r0) * batch]]
            dh_all = dh_all + tf.pad(d_top, pad)
    d_inputs = lay.to_image(d_columns[::-1], channels)
    if geo.shared_input:
        d_inputs = tf.reduce_sum(d_inputs, 0, keepdims=True)
    d_h0 = tf.reduce_sum(dh_all, 2) + tf.reduce_sum(d_top0, 2)
    return d_inputs, d_kernel, d_h0, tf.reduce_sum(dc_all, 2)


_scan_forward_xla = tf.function(_scan_forward, jit_compile=True)
_scan_backward_xla = tf.function(_scan_backward, jit_compile=True)


def diagonal_lstm_scan(inputs, input_kernel, state_kernel, initial_h, initial_c, mirrored,
                       max_phases=None):
    """D diagonal LSTMs (one per direction) over an image, input projection included.

    Direction d scans the image left to right, or right to left if `mirrored[d]` (the same as
    scanning the W-mirrored image). At pixel (i, j), with [o, f, i, g] gates,
      gates = x(i, j) @ input_kernel[d] + [h(i - 1, j), h(i, j -+ 1)] @ state_kernel[d],
    where states outside the image (above row 0, beside the first column) are
    (initial_h[d], initial_c[d]).

    Args:
      inputs: [Dx, B, H, W, C] float; Dx = 1 feeds the same map to every direction, Dx = D
        one map per direction. A constant-one channel with a bias row in `input_kernel`
        adds a bias.
      input_kernel: [D, C, 4u]; state_kernel: [D, 2u, 4u] (rows [:u] read the state above,
        rows [u:] the state beside); initial_h, initial_c: [D, u]. All of the inputs' dtype.
      mirrored: D bools.
      max_phases: see `phase_windows`.
    Returns:
      hidden states [D, B, H, W, u], in image coordinates for every direction.
    """
    return tf.stack(scan_directions(inputs, input_kernel, state_kernel, initial_h, initial_c,
                                    mirrored, max_phases))


def scan_directions(inputs, input_kernel, state_kernel, initial_h, initial_c, mirrored,
                    max_phases=None):
    """`diagonal_lstm_scan` returning a list of D hidden maps [B, H, W, u] (not stacked, so
    a caller that combines them adds no slicing to the backward pass)."""
    num_src, _, height, width, channels = inputs.shape
    num_dirs, _, four_u = input_kernel.shape
    if len(mirrored) != num_dirs or num_src not in (1, num_dirs):
        raise ValueError(f"inputs for {num_src} direction(s) and {len(mirrored)} mirror flags "
                         f"do not match a kernel for {num_dirs} direction(s)")
    units = four_u // 4
    phases = phase_windows(height, width, max_phases)
    in_xla = inside_xla()
    # Inside XLA both directions share one loop; otherwise one loop per direction lets
    # TensorFlow run them in parallel.
    groups = [tuple(range(num_dirs))] if in_xla else [(d,) for d in range(num_dirs)]
    forward = _scan_forward_xla if run_loops_compiled() else _scan_forward
    backward = _scan_backward if in_xla else _scan_backward_xla  # gradients: training only

    def geometry(group):
        return _Geometry(height, width, channels, units, tuple(bool(mirrored[d]) for d in group),
                         num_src == 1, phases)

    def part(tensor, group):
        return tensor[group[0]: group[-1] + 1]

    @tf.custom_gradient
    def scan(inputs, input_kernel, state_kernel, initial_h, initial_c):
        # The loops are differentiated by `grad` below, never by the tape: stop_gradient
        # keeps an eager tape from recording the compiled loops themselves.
        inputs, input_kernel, state_kernel, initial_h, initial_c = (
            tf.stop_gradient(v) for v in (inputs, input_kernel, state_kernel, initial_h,
                                          initial_c))
        kernel = tf.concat([state_kernel, input_kernel], 1)  # [D, 2u + C, 4u]
        sources = [inputs if num_src == 1 else part(inputs, g) for g in groups]
        results = [forward(x, part(kernel, g), part(initial_h, g), part(initial_c, g),
                           geometry(g)) for x, g in zip(sources, groups)]
        hidden = [h for r in results for h in tf.unstack(r[0])]

        def grad(*d_hidden):
            d_hidden = [tf.zeros_like(h) if d is None else d for h, d in zip(hidden, d_hidden)]
            outs = [backward(x, part(kernel, g), part(initial_h, g), part(initial_c, g),
                             r[1], tf.stack([d_hidden[d] for d in g]), geometry(g))
                    for x, g, r in zip(sources, groups, results)]
            d_inputs = (tf.add_n([o[0] for o in outs]) if num_src == 1
                        else tf.concat([o[0] for o in outs], 0))
            d_kernel = tf.concat([o[1] for o in outs], 0)
            return (d_inputs, d_kernel[:, 2 * units:], d_kernel[:, :2 * units],
                    tf.concat([o[2] for o in outs], 0), tf.concat([o[3] for o in outs], 0))

        return hidden, grad

    return scan(inputs, input_kernel, state_kernel, initial_h, initial_c)
