"""In-graph sampling and image completion for `PixelRNN` and `MultiScalePixelRNN` models.

Everything runs inside the graph (`tf.while_loop`), so the same code serves eager use, a
`tf.function` and a SavedModel for TF Serving. Sub-pixels are generated in raster order and,
inside a pixel, in channel order R, G, B.

Randomness is stateless: pixel ``p`` (raster index ``i * W + j``) of a batch draws Gumbel noise
[N, C, levels] from ``stateless_fold_in(seed, p)``, and a sub-pixel's value is
``argmax(logits / temperature + noise)`` (the Gumbel-max trick, an exact categorical sample).
The noise depends only on the seed and the position (sample ``n`` of a batch draws the same
noise whatever the batch size), so the same seed gives the same images for every method, for
sampling and for completion, and at every batch size, up to float rounding: the logits are
float32 sums that round differently with the batch shape, the method and the CPU's kernels,
so a pick whose two best values score within ~1e-6 of each other may flip, and the pixels
after it then differ. The same call (model, method, batch size, machine) repeats bit for bit.

Two methods:

- ``"naive"``: one full forward pass of the model per sub-pixel (the reference);
- ``"cached"``: each layer keeps the state the next pixels need (row buffers of its inputs, the
  LSTM states of the previous row), so a pixel costs O(layers) work with the model's own
  weights. For the Diagonal BiLSTM the left-to-right direction at (i, j) needs only (i, j - 1)
  and (i - 1, j); the right-to-left direction, shifted down one row, needs only rows < i, so it
  is swept once per finished row. The head only ever reads the pixel's own features.

A `MultiScalePixelRNN` samples in two stages, each with the chosen method: stage 1 draws the
s x s image; its pixels are written onto their positions (f a, f b) of the full image, where
they are known and copied, never resampled; stage 2, conditioned on the small image, draws the
other pixels. The stages use independent noise streams of the same seed (`seed_pair`), and
stage 1 alone equals `sample(model.small, ...)` with that seed. Completion keeps the first
`known_pixels` pixels of the full image; the small image's known pixels, those among them, are
a raster prefix of the small image (`small_known_pixels`).

Typical use::

    images = sample(model, num_samples=16, seed=0)                  # uint8 [16, H, W, C]
    filled = complete_rows(model, originals, known_rows=14, seed=1)  # top 14 rows kept

`sample` and `complete` run eagerly through one traced `tf.function` per model and method, or
build graph ops when called inside a `tf.function`. `sample_graph` and `complete_graph` are
the graph builders (used by the SavedModel signatures); for a `PixelRNN` they also take
per-block additive `conditioning` maps (what stage 2 of a Multi-Scale PixelRNN receives; a
`MultiScalePixelRNN` passed whole makes its own). `cached_logits` exposes the cached path's
logits for testing it against the full forward pass.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from pixelrnn_tf.lstm_cell import lstm_update
from pixelrnn_tf.model import validate_images
from pixelrnn_tf.multiscale import MultiScalePixelRNN, subsample_positions

METHODS = ("cached", "naive")
# Second word of the stateless seed pair; the first is the user's int64 seed.
_SEED_SALT = 0x5EED


# --------------------------------------------------------------------------------------------
# Randomness


def seed_pair(seed, stream=0):
    """An int64 scalar seed -> the [2] int64 key of the stateless RNG ops.

    stream: which independent stream of that seed (Multi-Scale PixelRNN: 0 for stage 1, 1 for
    stage 2, so that pixel p of one stage never reuses the noise of pixel p of the other).
    """
    seed = tf.cast(seed, tf.int64)
    return tf.stack([seed, tf.constant(_SEED_SALT + stream, tf.int64)])


def pixel_noise(seed, pixel, shape):
    """Gumbel noise of one pixel.

    Args:
      seed: [2] int64 key (`seed_pair`).
      pixel: int32 scalar, the raster index i * W + j.
      shape: [N, C, levels].
    Returns:
      float32 noise of `shape`, a function of (seed, pixel) only.
    """
    key = tf.random.experimental.stateless_fold_in(seed, pixel)
    uniform = tf.random.stateless_uniform(
        shape, key, minval=np.finfo(np.float32).tiny, maxval=1.0, dtype=tf.float32)
    return -tf.math.log(-tf.math.log(uniform))


def choose(logits, noise, temperature):
    """logits [N, levels], noise [N, levels] -> int32 [N], a sample at `temperature`."""
    scaled = tf.cast(logits, tf.float32) / temperature
    return tf.argmax(scaled + noise, axis=-1, output_type=tf.int32)


# --------------------------------------------------------------------------------------------
# Naive sampler: one full forward pass per sub-pixel


def _naive_loop(model, images, known_pixels, seed, temperature, conditioning=None,
                fixed=None):
    """images int32 [N, H, W, C] (pixels >= known_pixels are overwritten, except those
    marked in `fixed`, bool [H * W] in raster order, or None) -> int32 images."""
    height, width, channels = model.image_shape
    levels = model.levels
    batch = tf.shape(images)[0]
    num_subpixels = height * width * channels

    def subpixel_mask(index):
        return tf.reshape(tf.one_hot(index, num_subpixels, on_value=True, off_value=False),
                          (1, height, width, channels))

    def draw(p, images):
        i, j = p // width, p % width
        noise = pixel_noise(seed, p, tf.stack([batch, channels, levels]))
        for c in range(channels):
            logits = model.head(model.features(model.scale_inputs(images), conditioning))
            value = choose(logits[:, i, j, c], noise[:, c], temperature)
            images = tf.where(subpixel_mask(p * channels + c), value[:, None, None, None],
                              images)
        return images

    def step(p, images):
        if fixed is None:
            return p + 1, draw(p, images)
        return p + 1, tf.cond(tf.constant(fixed)[p], lambda: images, lambda: draw(p, images))

    _, images = tf.while_loop(lambda p, _: p < height * width, step, (known_pixels, images),
                              maximum_iterations=height * width)
    return images


# --------------------------------------------------------------------------------------------
# Cached sampler: per-layer state, O(layers) per pixel
#
# Buffers are position-major ([W, N, ...] or [rows, W, N, ...]) so that one position is one
# row of a `tensor_scatter_nd_update`. Convolutions over earlier positions read a window of
# the buffer with the masked kernel whose centre tap is zeroed; the centre tap is applied to
# the current pixel's value separately, so the buffers only ever hold finished pixels.


def _dense(conv):
    """A 1x1 MaskedConv2D as (kernel [in, out], bias [out] or None, activation)."""
    kernel = conv.masked_kernel()
    return kernel[0, 0], conv.bias if conv.use_bias else None, conv.activation


def _apply_dense(params, x):
    kernel, bias, activation = params
    y = tf.matmul(x, tf.cast(kernel, x.dtype))
    if bias is not None:
        y = y + tf.cast(bias, x.dtype)
    return activation(y)


def _split_window_kernel(conv):
    """A k x k masked kernel -> (rows up to the centre with the centre tap zeroed
    [k//2 + 1, k, in, out], centre tap [in, out], bias or None)."""
    kernel = conv.masked_kernel()
    kh, kw = conv.kernel_size
    rh, rw = kh // 2, kw // 2
    keep = np.ones((rh + 1, kw, 1, 1), np.float32)
    keep[rh, rw] = 0.0
    top = kernel[: rh + 1] * tf.constant(keep, kernel.dtype)
    return top, kernel[rh, rw], conv.bias if conv.use_bias else None


def _put(buffer, index, value):
    """buffer[index] = value for a buffer [K, ...] and value [...] (index int32 scalar)."""
    return tf.tensor_scatter_nd_update(buffer, tf.reshape(index, (1, 1)), value[None])


def _put2(buffer, row, col, value):
    """buffer[row, col] = value for a buffer [R, K, ...]."""
    return tf.tensor_scatter_nd_update(buffer, tf.reshape(tf.stack([row, col]), (1, 2)),
                                       value[None])


def _roll_rows(buffer):
    """[R, ...] -> the rows moved up by one, a zero row at the bottom (a new image row)."""
    return tf.concat([buffer[1:], tf.zeros_like(buffer[:1])], axis=0)


class _WindowConv:
    """A k x k masked convolution evaluated one pixel at a time over a rolling buffer of the
    last k//2 + 1 rows of its input ([k//2 + 1, W + 2 (k//2), N, in], zero padded)."""

    def __init__(self, conv, width):
        self.top, self.centre, self.bias = _split_window_kernel(conv)
        kh, kw = conv.kernel_size
        self.rows, self.kw, self.pad = kh // 2 + 1, kw, kw // 2
        self.in_dim = int(self.top.shape[2])
        self.width = width
        self.activation = conv.activation

    def initial(self, batch, dtype):
        return tf.zeros(tf.stack([self.rows, self.width + 2 * self.pad, batch, self.in_dim]),
                        dtype)

    def __call__(self, buffer, j, centre_value):
        """Output at column j of the newest row, the centre input being `centre_value`."""
        window = buffer[:, j: j + self.kw]  # [rows, kw, N, in]
        y = tf.einsum("abni,abio->no", window, tf.cast(self.top, window.dtype))
        y = y + tf.matmul(centre_value, tf.cast(self.centre, centre_value.dtype))
        if self.bias is not None:
            y = y + tf.cast(self.bias, y.dtype)
        return y

    def commit(self, buffer, j, value):
        return _put2(buffer, tf.constant(self.rows - 1), j + self.pad, value)


def _conditioning_at(conditioning, i, j):
    return None if conditioning is None else conditioning[i, j]


class _RowLSTMBlockCache:
    """Cached `RecurrentBlock` with a `RowLSTM`.

    Cache: x_row [W + r, N, 2h] block inputs of the current row (r = k // 2 zero columns in
    front); h_rows, c_rows [W, N, h] states of the previous row, overwritten column by column.
    Per row: the state-to-state pre-activations of the whole row, [W, N, 4h].
    """

    def __init__(self, block, width):
        rnn = block.rnn
        self.block, self.rnn, self.width = block, rnn, width
        kernel = rnn.input_to_state.masked_kernel()[0]  # [k, 2h, 4h]
        self.r = rnn.kernel_size // 2
        self.left, self.centre = kernel[: self.r], kernel[self.r]
        self.bias = rnn.input_to_state.bias if rnn.input_to_state.use_bias else None
        self.output = _dense(block.output_conv)

    def initial(self, batch, dtype):
        features = int(self.centre.shape[0])  # the block input, 2h
        shape = tf.stack([self.width, batch, self.rnn.units])
        return dict(x_row=tf.zeros(tf.stack([self.width + self.r, batch, features]), dtype),
                    h_rows=tf.broadcast_to(tf.cast(self.rnn.initial_h, dtype), shape),
                    c_rows=tf.broadcast_to(tf.cast(self.rnn.initial_c, dtype), shape))

    def start_row(self, cache):
        return cache

    def row_context(self, cache, i):
        """State-to-state pre-activations of row i (+ the input bias), [W, N, 4h]: column j
        reads h(j - 1), h(j), h(j + 1) of the previous row, zero beyond its ends."""
        h_prev = cache["h_rows"]
        padded = tf.pad(h_prev, [[1, 1], [0, 0], [0, 0]])
        kernel = tf.cast(self.rnn.state_kernel, h_prev.dtype)  # [3, h, 4h]
        recurrent = tf.add_n([tf.einsum("wnh,hg->wng", padded[k: k + self.width], kernel[k])
                              for k in range(3)])
        if self.bias is not None:
            recurrent = recurrent + tf.cast(self.bias, recurrent.dtype)
        return recurrent

    def pixel(self, cache, context, j, x, conditioning):
        gates = context[j] + tf.matmul(x, tf.cast(self.centre, x.dtype))
        if self.r:
            window = cache["x_row"][j: j + self.r]  # columns j - r .. j - 1
            gates = gates + tf.einsum("knd,kdg->ng", window, tf.cast(self.left, x.dtype))
        if conditioning is not None:
            gates = gates + conditioning
        h, c = lstm_update(gates, cache["c_rows"][j])
        out = _apply_dense(self.output, h)
        return (out + x if self.block.residual else out), (x, h, c)

    def commit(self, cache, j, updates):
        x, h, c = updates
        return dict(x_row=_put(cache["x_row"], j + self.r, x),
                    h_rows=_put(cache["h_rows"], j, h), c_rows=_put(cache["c_rows"], j, c))


class _DiagonalBiLSTMBlockCache:
    """Cached `RecurrentBlock` with a `DiagonalBiLSTM`.

    Direction 0 (left to right) at (i, j) reads h(i - 1, j) from `up` [W, N, h] (the previous
    row, overwritten column by column) and h, c(i, j - 1) from `left_h`, `left_c` [N, h].
    Direction 1 (right to left) at (i, j) reads h(i - 1, j) and h, c(i, j + 1): it is swept
    right to left over a finished row, from that row's input gates `gates1` [W, N, 4h]; its
    result `h1_rows` [W, N, h] is what the shift-down adds to the next row.
    """

    def __init__(self, block, width):
        rnn = block.rnn
        self.block, self.rnn, self.width = block, rnn, width
        units = rnn.units
        kernel = rnn.input_to_state.masked_kernel()[0, 0]  # [2h, 8h] = [dir0 4h | dir1 4h]
        self.in0, self.in1 = kernel[:, : 4 * units], kernel[:, 4 * units:]
        bias = rnn.input_to_state.bias if rnn.input_to_state.use_bias else None
        self.bias0 = None if bias is None else bias[: 4 * units]
        self.bias1 = None if bias is None else bias[4 * units:]
        state = rnn.state_kernel  # [2, 2h, 4h]: rows [:h] above, [h:] left (own frame)
        self.up0, self.left0 = state[0, :units], state[0, units:]
        self.up1, self.left1 = state[1, :units], state[1, units:]
        self.output = _dense(block.output_conv)

    def _initial(self, direction, batch, dtype):
        shape = tf.stack([batch, self.rnn.units])
        return (tf.broadcast_to(tf.cast(self.rnn.initial_h[direction], dtype), shape),
                tf.broadcast_to(tf.cast(self.rnn.initial_c[direction], dtype), shape))

    def initial(self, batch, dtype):
        units = self.rnn.units
        row = lambda v: tf.broadcast_to(v, tf.stack([self.width, batch, units]))  # noqa: E731
        h0, c0 = self._initial(0, batch, dtype)
        h1, _ = self._initial(1, batch, dtype)
        return dict(up=row(h0), left_h=h0, left_c=c0, h1_rows=row(h1),
                    gates1=tf.zeros(tf.stack([self.width, batch, 4 * units]), dtype))

    def start_row(self, cache):
        like = tf.zeros_like(cache["left_h"])  # keeps the static batch size, if any
        return dict(cache, left_h=like + tf.cast(self.rnn.initial_h[0], like.dtype),
                    left_c=like + tf.cast(self.rnn.initial_c[0], like.dtype))

    def row_context(self, cache, i):
        """Per row: direction 0's above-term [W, N, 4h] (+ bias) and the output of the
        shifted direction 1 through the output convolution, [W, N, 2h] (zero h in row 0)."""
        dtype = cache["up"].dtype
        above = tf.einsum("wnh,hg->wng", cache["up"], tf.cast(self.up0, dtype))
        if self.bias0 is not None:
            above = above + tf.cast(self.bias0, dtype)
        shifted = cache["h1_rows"] * tf.cast(i > 0, dtype)
        kernel, bias, _ = self.output
        from_dir1 = tf.einsum("wnh,hd->wnd", shifted, tf.cast(kernel, dtype))
        if bias is not None:
            from_dir1 = from_dir1 + tf.cast(bias, dtype)
        return above, from_dir1

    def pixel(self, cache, context, j, x, conditioning):
        above, from_dir1 = context
        gates = (above[j] + tf.matmul(x, tf.cast(self.in0, x.dtype))
                 + tf.matmul(cache["left_h"], tf.cast(self.left0, x.dtype)))
        if conditioning is not None:
            gates = gates + conditioning
        h, c = lstm_update(gates, cache["left_c"])
        # output_conv is linear before its activation: conv(h0 + h1) = h0 K + (h1 K + b).
        out = self.output[2](tf.matmul(h, tf.cast(self.output[0], x.dtype)) + from_dir1[j])
        return (out + x if self.block.residual else out), (x, h, c)

    def commit(self, cache, j, updates):
        x, h, c = updates
        gates1 = tf.matmul(x, tf.cast(self.in1, x.dtype))
        if self.bias1 is not None:
            gates1 = gates1 + tf.cast(self.bias1, x.dtype)
        return dict(cache, up=_put(cache["up"], j, h), left_h=h, left_c=c,
                    gates1=_put(cache["gates1"], j, gates1))

    def sweep_inputs(self, cache, conditioning_row):
        """Direction 1's inputs over the finished row: gates without the left term
        [W, N, 4h], the state right of the row (h, c) [N, h], the left kernel [h, 4h]."""
        dtype = cache["up"].dtype
        gates = cache["gates1"] + tf.einsum("wnh,hg->wng", cache["h1_rows"],
                                            tf.cast(self.up1, dtype))
        if conditioning_row is not None:
            gates = gates + conditioning_row
        h, c = self._initial(1, tf.shape(gates)[1], dtype)
        return gates, h, c, tf.cast(self.left1, dtype)

    def end_row(self, cache, h1_rows):
        return dict(cache, h1_rows=h1_rows)


def _sweep_right_to_left(gates, h, c, left):
    """Direction 1 of several Diagonal BiLSTM layers over a finished row, right to left.

    Args:
      gates: [K, W, N, 4h] input and above terms; h, c: [K, N, h] state right of the row;
      left: [K, h, 4h] kernel of the state to the right (the "left" in the mirrored frame).
    Returns:
      h of the row, [K, W, N, h].
    """
    width = gates.shape[1]
    out = tf.TensorArray(gates.dtype, size=width, element_shape=h.shape)

    def step(j, h, c, out):
        h, c = lstm_update(gates[:, j] + tf.matmul(h, left), c)
        return j - 1, h, c, out.write(j, h)

    _, _, _, out = tf.while_loop(lambda j, *_: j >= 0, step,
                                 (tf.constant(width - 1), h, c, out),
                                 maximum_iterations=width)
    return tf.transpose(out.stack(), (1, 0, 2, 3))


class _PixelCNNBlockCache:
    """Cached `PixelCNNBlock`: a rolling buffer of its spatial convolution's input,
    relu(reduce(relu(x))), over the last k // 2 + 1 rows."""

    def __init__(self, block, width):
        self.block = block
        self.reduce, self.expand = _dense(block.reduce), _dense(block.expand)
        self.spatial = _WindowConv(block.spatial, width)

    def initial(self, batch, dtype):
        return dict(window=self.spatial.initial(batch, dtype))

    def start_row(self, cache):
        return dict(window=_roll_rows(cache["window"]))

    def row_context(self, cache, i):
        return ()

    def pixel(self, cache, context, j, x, conditioning):
        a = tf.nn.relu(_apply_dense(self.reduce, tf.nn.relu(x)))
        s = self.spatial.activation(self.spatial(cache["window"], j, a))
        if conditioning is not None:
            s = s + conditioning
        out = _apply_dense(self.expand, tf.nn.relu(s))
        return (out + x if self.block.residual else out), a

    def commit(self, cache, j, updates):
        return dict(window=self.spatial.commit(cache["window"], j, updates))


def _block_cache(block, width):
    if hasattr(block, "rnn"):
        if block.architecture == "row_lstm":
            return _RowLSTMBlockCache(block, width)
        return _DiagonalBiLSTMBlockCache(block, width)
    return _PixelCNNBlockCache(block, width)


class CachedStack:
    """The whole model evaluated one pixel at a time with per-layer caches.

    Built inside a graph (it reads the model's variables through its masked kernels).

    Args:
      model: a built `PixelRNN`.
      conditioning: optional list with one additive map per block, as for
        `PixelRNN.features` ([N, H, W, 4h] for recurrent blocks, [N, H, W, h] for PixelCNN).
    """

    def __init__(self, model, conditioning=None):
        self.model = model
        height, width, channels = model.image_shape
        self.height, self.width, self.channels = height, width, channels
        self.dtype = tf.as_dtype(model.compute_dtype)
        self.first = _WindowConv(model.first_conv, width)
        self.blocks = [_block_cache(block, width) for block in model.body]
        self.skips = [_dense(conv) for conv in model.skip_convs]
        self.hidden = _dense(model.output_hidden)
        self.logits = _dense(model.output_logits)
        self.conditioning = None
        if conditioning is not None:
            # [H, W, N, X] per block, so that position (i, j) is one gather.
            self.conditioning = [tf.transpose(tf.cast(m, self.dtype), (1, 2, 0, 3))
                                 for m in conditioning]

    def initial(self, batch):
        return dict(image=self.first.initial(batch, self.dtype),
                    blocks=[b.initial(batch, self.dtype) for b in self.blocks])

    def start_row(self, cache, i):
        """New row i: returns (cache, row context)."""
        cache = dict(image=_roll_rows(cache["image"]),
                     blocks=[b.start_row(c) for b, c in zip(self.blocks, cache["blocks"])])
        context = [b.row_context(c, i) for b, c in zip(self.blocks, cache["blocks"])]
        return cache, context

    def pixel(self, cache, context, i, j, pixel):
        """Logits of pixel (i, j) given the finished pixels and `pixel` [N, C] (scaled values
        of the channels chosen so far; the others are ignored by the masks).

        Returns (logits [N, C, levels], per-block updates for `commit`).
        """
        x = self.first.activation(self.first(cache["image"], j, pixel))
        updates, skips = [], []
        for k, (block, block_cache) in enumerate(zip(self.blocks, cache["blocks"])):
            cond = (None if self.conditioning is None
                    else _conditioning_at(self.conditioning[k], i, j))
            x, update = block.pixel(block_cache, context[k], j, x, cond)
            updates.append(update)
            if self.skips:
                skips.append(_apply_dense(self.skips[k], x))
        features = tf.add_n(skips) if skips else x
        hidden = _apply_dense(self.hidden, tf.nn.relu(features))
        logits = _apply_dense(self.logits, tf.nn.relu(hidden))
        return tf.reshape(logits, (-1, self.channels, self.model.levels)), updates

    def commit(self, cache, j, pixel, updates):
        """Stores the finished pixel (i, j): `pixel` [N, C] scaled, `updates` from `pixel()`."""
        return dict(image=self.first.commit(cache["image"], j, pixel),
                    blocks=[b.commit(c, j, u)
                            for b, c, u in zip(self.blocks, cache["blocks"], updates)])

    def end_row(self, cache, i):
        """After row i: the Diagonal BiLSTMs' right-to-left direction, all layers at once."""
        if not self.blocks or not isinstance(self.blocks[0], _DiagonalBiLSTMBlockCache):
            return cache
        inputs = [block.sweep_inputs(
            block_cache, None if self.conditioning is None else self.conditioning[k][i])
            for k, (block, block_cache) in enumerate(zip(self.blocks, cache["blocks"]))]
        h1_rows = _sweep_right_to_left(*(tf.stack(parts) for parts in zip(*inputs)))
        return dict(cache, blocks=[block.end_row(block_cache, h1_rows[k]) for k, (
            block, block_cache) in enumerate(zip(self.blocks, cache["blocks"]))])


def _cached_loop(model, images, known_pixels, seed, temperature, record_logits=False,
                 conditioning=None, fixed=None):
    """Raster-order loop over pixels with the cached stack.

    images int32 [N, H, W, C]: pixels < known_pixels and those marked in `fixed` (bool
    [H * W] in raster order, or None) are kept, the others sampled.
    Returns int32 images [N, H, W, C], and with `record_logits` also the logits the sampler
    used, [N, H, W, C, levels].
    """
    height, width, channels = model.image_shape
    levels = model.levels
    stack = CachedStack(model, conditioning)
    # A dynamic batch size throughout, so no loop variable changes its static shape.
    images = tf.raw_ops.PlaceholderWithDefault(input=images,
                                               shape=[None, height, width, channels])
    batch = tf.shape(images)[0]
    by_position = tf.transpose(images, (1, 2, 0, 3))  # [H, W, N, C]
    one_hot = tf.eye(channels, dtype=stack.dtype)

    fixed = None if fixed is None else tf.constant(fixed)
    pixels_out = tf.TensorArray(tf.int32, size=height * width)
    logits_out = tf.TensorArray(tf.float32, size=height * width if record_logits else 0,
                                dynamic_size=not record_logits)

    def row_step(i, cache, pixels_out, logits_out):
        cache, context = stack.start_row(cache, i)

        def column_step(j, cache, pixels_out, logits_out):
            p = i * width + j
            noise = pixel_noise(seed, p, tf.stack([batch, channels, levels]))
            given = by_position[i, j]  # [N, C]
            keep = p < known_pixels if fixed is None else (p < known_pixels) | fixed[p]
            pixel = tf.zeros(tf.stack([batch, channels]), stack.dtype)
            values, used = [], []
            for c in range(channels):
                logits, updates = stack.pixel(cache, context, i, j, pixel)
                value = tf.where(keep, given[:, c],
                                 choose(logits[:, c], noise[:, c], temperature))
                values.append(value)
                used.append(logits[:, c])
                pixel = pixel + model.scale_inputs(value)[:, None] * one_hot[c]
            # No feature of pixel (i, j) reads its last channel (mask A), so the updates of
            # the last pass are those of the finished pixel.
            cache = stack.commit(cache, j, pixel, updates)
            pixels_out = pixels_out.write(p, tf.stack(values, axis=-1))
            if record_logits:
                logits_out = logits_out.write(p, tf.cast(tf.stack(used, axis=1), tf.float32))
            return j + 1, cache, pixels_out, logits_out

        _, cache, pixels_out, logits_out = tf.while_loop(
            lambda j, *_: j < width, column_step, (tf.constant(0), cache, pixels_out,
                                                   logits_out),
            maximum_iterations=width)
        cache = stack.end_row(cache, i)
        return i + 1, cache, pixels_out, logits_out

    _, _, pixels_out, logits_out = tf.while_loop(
        lambda i, *_: i < height, row_step,
        (tf.constant(0), stack.initial(batch), pixels_out, logits_out),
        maximum_iterations=height)
    result = tf.reshape(pixels_out.stack(), tf.stack([height, width, batch, channels]))
    result = tf.transpose(result, (2, 0, 1, 3))
    if not record_logits:
        return result
    logits = tf.reshape(logits_out.stack(), tf.stack([height, width, batch, channels, levels]))
    return result, tf.transpose(logits, (2, 0, 1, 3, 4))


# --------------------------------------------------------------------------------------------
# Multi-Scale PixelRNN: stage 1 samples the small image, stage 2 the rest of the full image


def small_known_pixels(image_shape, small_size, known_pixels):
    """How many pixels of the small image are known when the first `known_pixels` pixels of
    the full image (raster order) are: those of its pixels (f a, f b) whose full raster index
    f a W + f b is < known_pixels. That index grows with the small raster index a s + b
    (within a row by f, and from (a, s - 1) to (a + 1, 0) by f W - f (s - 1) = f W - W + f
    > 0), so the known small pixels are always a raster prefix of the small image.

    image_shape: (H, W, C) of the full image, H = W = f * small_size.
    known_pixels: int32 scalar (a tensor or an int) -> int32 scalar in [0, s * s].
    """
    width, s = image_shape[1], small_size
    f = width // s
    rows, cols = np.meshgrid(np.arange(s) * f, np.arange(s) * f, indexing="ij")
    full_index = tf.constant((rows * width + cols).reshape(-1), tf.int32)  # increasing
    return tf.reduce_sum(tf.cast(full_index < tf.cast(known_pixels, tf.int32), tf.int32))


def _multiscale_complete(model, images, known_pixels, seed, temperature, method):
    """Completion with a `MultiScalePixelRNN`; images int32 [N, H, W, C] -> int32.

    1. Stage 1 completes the small image x[:, ::f, ::f] with its known prefix (the subsampled
       pixels among the first `known_pixels`, `small_known_pixels`), noise stream 0.
    2. The small image is written onto its positions of the full image: those pixels are
       then known and copied, never resampled (stage 2 is not trained on them).
    3. Stage 2, conditioned on the small image, samples the other pixels from
       `known_pixels` on in raster order, noise stream 1.
    Sampling is completion with known_pixels = 0. Stage 1 alone is `complete(model.small,
    ...)` with the same seed.
    """
    f = model.factor
    small = _complete_ints(model.small, model.subsample(images),
                           small_known_pixels(model.image_shape, model.small_size,
                                              known_pixels), seed_pair(seed, 0),
                           temperature, method)
    on_grid = subsample_positions(model.image_shape, f)  # [H, W, C] bool
    placed = tf.repeat(tf.repeat(small, f, axis=1), f, axis=2)
    images = tf.where(tf.constant(on_grid)[None], placed, images)
    conditioning = model.conditioning(model.small.scale_inputs(small))
    return _complete_ints(model.full, images, known_pixels, seed_pair(seed, 1), temperature,
                          method, conditioning, fixed=on_grid[..., 0].reshape(-1))


# --------------------------------------------------------------------------------------------
# Graph-level entry points (usable inside any tf.function, e.g. the SavedModel signatures)


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def output_dtype(model):
    """Samples are uint8, or int32 for a model with more than 256 levels."""
    return tf.uint8 if model.levels <= 256 else tf.int32


def _check_model(model):
    if not model.built:
        model.build()


def _checked_temperature(temperature):
    temperature = tf.cast(temperature, tf.float32)
    check = tf.debugging.Assert(
        tf.math.is_finite(temperature) & (temperature > 0.0),
        ["temperature must be a finite number > 0, got", temperature])
    with tf.control_dependencies([check]):
        return tf.identity(temperature)


def _complete_ints(model, images, known_pixels, key, temperature, method,
                   conditioning=None, fixed=None):
    """The sampler loop of one `PixelRNN`: int32 images -> int32 images (key: `seed_pair`)."""
    if method == "naive":
        return _naive_loop(model, images, known_pixels, key, temperature, conditioning, fixed)
    return _cached_loop(model, images, known_pixels, key, temperature,
                        conditioning=conditioning, fixed=fixed)


def complete_graph(model, images, known_pixels, seed, temperature=1.0, method="cached",
                   conditioning=None):
    """Graph-building `complete`: images int [N, H, W, C] -> uint8 [N, H, W, C] (int32 for
    more than 256 levels).

    model: a `PixelRNN` or a `MultiScalePixelRNN` (see `_multiscale_complete`).
    conditioning: optional list of one additive map per block, as for `PixelRNN.features`,
      with the batch size N (a `PixelRNN` only; a `MultiScalePixelRNN` makes its own).
    """
    _check_method(method)
    _check_model(model)
    multiscale = isinstance(model, MultiScalePixelRNN)
    if multiscale and conditioning is not None:
        raise ValueError("a MultiScalePixelRNN conditions its stage 2 itself; pass no "
                         "conditioning")
    images = validate_images(images, model.image_shape, model.levels)
    height, width, _ = model.image_shape
    known_pixels = tf.cast(known_pixels, tf.int32)
    check = tf.debugging.Assert(
        (known_pixels >= 0) & (known_pixels <= height * width),
        [f"known_pixels must lie in [0, {height * width}] (pixels in raster order), got",
         known_pixels])
    with tf.control_dependencies([check]):
        known_pixels = tf.identity(known_pixels)
    temperature = _checked_temperature(temperature)
    if multiscale:
        out = _multiscale_complete(model, images, known_pixels, seed, temperature, method)
    else:
        out = _complete_ints(model, images, known_pixels, seed_pair(seed), temperature,
                             method, conditioning)
    return tf.cast(out, output_dtype(model))


def sample_graph(model, num_samples, seed, temperature=1.0, method="cached",
                 conditioning=None):
    """Graph-building `sample`: -> uint8 [num_samples, H, W, C] (conditioning: as for
    `complete_graph`)."""
    num_samples = tf.cast(num_samples, tf.int32)
    check = tf.debugging.Assert(num_samples >= 0, ["num_samples must be >= 0, got",
                                                   num_samples])
    with tf.control_dependencies([check]):
        shape = tf.concat([[num_samples], tf.constant(model.image_shape, tf.int32)], 0)
    return complete_graph(model, tf.zeros(shape, tf.int32), 0, seed, temperature, method,
                          conditioning)


def cached_logits(model, images, conditioning=None):
    """Teacher-forced logits through the cached sampler's per-pixel path.

    Every pixel of `images` is fed as known; the result is what the sampler computed for
    each sub-pixel before choosing it, i.e. it must equal `model(images)` (a test of the
    cache). images int [N, H, W, C] -> float32 [N, H, W, C, levels]; for a
    `MultiScalePixelRNN`, like its `call`, (small [N, s, s, C, levels], full [N, H, W, C,
    levels]).
    """
    _check_model(model)
    images = validate_images(images, model.image_shape, model.levels)
    if isinstance(model, MultiScalePixelRNN):
        if conditioning is not None:
            raise ValueError("a MultiScalePixelRNN conditions its stage 2 itself; pass no "
                             "conditioning")
        small = model.subsample(images)
        return (cached_logits(model.small, small),
                cached_logits(model.full, images,
                              model.conditioning(model.small.scale_inputs(small))))
    height, width, _ = model.image_shape
    _, logits = _cached_loop(model, images, height * width, seed_pair(0), 1.0,
                             record_logits=True, conditioning=conditioning)
    return logits


# --------------------------------------------------------------------------------------------
# Public API: eager calls go through one traced tf.function per model and method


_FUNCTIONS = weakref.WeakKeyDictionary()


def _traced(model, kind, method):
    functions = _FUNCTIONS.setdefault(model, {})
    key = (kind, method)
    if key not in functions:
        model_ref = weakref.ref(model)  # the cache must not keep the model alive
        height, width, channels = model.image_shape
        scalars = dict(seed=tf.TensorSpec([], tf.int64, name="seed"),
                       temperature=tf.TensorSpec([], tf.float32, name="temperature"))
        if kind == "sample":
            functions[key] = tf.function(
                lambda num_samples, seed, temperature: sample_graph(
                    model_ref(), num_samples, seed, temperature, method),
                input_signature=[tf.TensorSpec([], tf.int32, name="num_samples"),
                                 scalars["seed"], scalars["temperature"]],
                autograph=False)
        else:
            functions[key] = tf.function(
                lambda images, known_pixels, seed, temperature: complete_graph(
                    model_ref(), images, known_pixels, seed, temperature, method),
                input_signature=[
                    tf.TensorSpec([None, height, width, channels], tf.int32, name="images"),
                    tf.TensorSpec([], tf.int32, name="known_pixels"),
                    scalars["seed"], scalars["temperature"]],
                autograph=False)
    return functions[key]


def _check_scalars(seed, temperature):
    if tf.is_tensor(seed) or tf.is_tensor(temperature):
        return
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not -2**63 <= int(seed) < 2**63:
        raise ValueError(f"seed must fit in int64, got {seed}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def sample(model, num_samples, seed, temperature=1.0, method="cached"):
    """Draws `num_samples` images from `model`.

    Args:
      model: a `PixelRNN` or a `MultiScalePixelRNN` (stage 1, then stage 2).
      num_samples: int >= 0.
      seed: int (int64); the same seed gives the same images, whatever the method, up to
        float rounding (module docstring).
      temperature: > 0; logits are divided by it (1 = the model's distribution).
      method: "cached" (O(layers) per pixel) or "naive" (a forward pass per sub-pixel).
    Returns:
      uint8 tensor [num_samples, H, W, C] (int32 if the model has more than 256 levels).
    """
    _check_method(method)
    _check_model(model)
    if not tf.executing_eagerly():
        return sample_graph(model, num_samples, seed, temperature, method)
    _check_scalars(seed, temperature)
    if tf.is_tensor(num_samples):
        num_samples = num_samples.numpy()
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or \
            num_samples < 0:
        raise ValueError(f"num_samples must be an integer >= 0, got {num_samples!r}")
    return _traced(model, "sample", method)(
        tf.constant(num_samples, tf.int32), tf.constant(seed, tf.int64),
        tf.constant(temperature, tf.float32))


def complete(model, images, known_pixels, seed, temperature=1.0, method="cached"):
    """Keeps the first `known_pixels` pixels (raster order) of each image and samples the rest.

    Args:
      model: a `PixelRNN` or a `MultiScalePixelRNN`.
      images: integer [N, H, W, C] in [0, levels); pixels from `known_pixels` on are ignored.
      known_pixels: int in [0, H * W].
      seed, temperature, method: as for `sample`.
    Returns:
      uint8 tensor [N, H, W, C] (int32 if the model has more than 256 levels).
    """
    _check_method(method)
    _check_model(model)
    if not tf.executing_eagerly():
        return complete_graph(model, images, known_pixels, seed, temperature, method)
    _check_scalars(seed, temperature)
    images = validate_images(images, model.image_shape, model.levels)
    height, width, _ = model.image_shape
    if tf.is_tensor(known_pixels):
        known_pixels = known_pixels.numpy()
    if isinstance(known_pixels, bool) or not isinstance(known_pixels, (int, np.integer)):
        raise ValueError(f"known_pixels must be an integer, got {known_pixels!r}")
    known_pixels = int(known_pixels)
    if not 0 <= known_pixels <= height * width:
        raise ValueError(f"known_pixels must lie in [0, {height * width}], got {known_pixels}")
    return _traced(model, "complete", method)(
        images, tf.constant(known_pixels, tf.int32), tf.constant(seed, tf.int64),
        tf.constant(temperature, tf.float32))


def complete_rows(model, images, known_rows, seed, temperature=1.0, method="cached"):
    """`complete` with the top `known_rows` rows known (0 <= known_rows <= H)."""
    height, width, _ = model.image_shape
    if not tf.is_tensor(known_rows) and not 0 <= int(known_rows) <= height:
        raise ValueError(f"known_rows must lie in [0, {height}], got {known_rows}")
    return complete(model, images, known_rows * width, seed, temperature, method)
