"""The PixelRNN model: first 7x7 mask-A layer, a body of residual blocks, skip connections and
a two-layer ReLU / 1x1 mask-B output over `levels` values per sub-pixel."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pixelrnn_tf import losses
from pixelrnn_tf.blocks import PixelCNNBlock, RecurrentBlock
from pixelrnn_tf.class_conditional import label_counts_to_log_prior, validate_labels
from pixelrnn_tf.lstm_cell import sweep_right_to_left
from pixelrnn_tf.masked_conv import MaskedConv2D
from pixelrnn_tf.sampling_stages import SamplingStage

ARCHITECTURES = ("row_lstm", "diagonal_bilstm", "pixelcnn")


def validate_images(images, image_shape, levels):
    """Checks images against the model contract; returns them as an int32 tensor.

    Shape, rank and dtype problems raise `ValueError` at trace time. Values outside
    [0, levels) raise `ValueError` when the images are concrete (eager) and an
    `InvalidArgumentError` from an in-graph assert otherwise.
    """
    images = tf.convert_to_tensor(images)
    if not (images.dtype.is_integer or images.dtype == tf.bool):
        raise ValueError(
            f"images must be an integer tensor of values in [0, {levels}), got dtype "
            f"{images.dtype.name}; cast quantized pixels to int (do not scale them)")
    if images.shape.rank != 4:
        raise ValueError(
            f"images must have rank 4 [batch, height, width, channels], got shape "
            f"{images.shape}")
    expected = tuple(image_shape)
    for axis, (got, want) in enumerate(zip(images.shape[1:], expected)):
        if got is not None and got != want:
            name = ("height", "width", "channels")[axis]
            raise ValueError(
                f"images {name} is {got} but the model expects image shape {expected} "
                f"(got shape {tuple(images.shape)})")
    images = tf.cast(images, tf.int32)
    if tf.executing_eagerly():
        if images.shape.num_elements():
            low, high = int(tf.reduce_min(images)), int(tf.reduce_max(images))
            if low < 0 or high >= levels:
                raise ValueError(
                    f"image values must lie in [0, {levels}), got min {low} max {high}")
    else:
        check = tf.debugging.Assert(
            tf.reduce_all((images >= 0) & (images < levels)),
            [f"image values must lie in [0, {levels})", tf.reduce_min(images),
             tf.reduce_max(images)])
        with tf.control_dependencies([check]):
            images = tf.identity(images)
    return images


@keras.saving.register_keras_serializable(package="pixelrnn_tf")
class PixelRNN(keras.Model):
    """PixelRNN / PixelCNN over discrete images with exact likelihood.

    Args:
      architecture: "row_lstm", "diagonal_bilstm" or "pixelcnn".
      image_shape: (H, W, C), any C >= 1; channels are modelled in order (R, G, B).
      levels: values per sub-pixel (2 binary, 17 digits, 256 8-bit).
      num_layers: residual blocks in the body.
      hidden_dim: h; blocks carry 2h features, each LSTM has h units per gate.
      output_dim: feature maps of the output layers (paper: 32 MNIST, 1024 CIFAR/ImageNet);
        default 32 for levels <= 16, else 1024 (capped at 16 * levels).
      residual: residual connections around every block.
      skip: learnable 1x1 skip connections from every block to the output.
      first_kernel: size of the first mask-A convolution (paper: 7).
      row_kernel: width k of the Row LSTM's input-to-state 1 x k convolution (paper: 3).
      num_classes: K > 0 for a class-conditional model p(x | y), y in [0, K): a learned
        embedding of the label is added to every block's pre-activations
        (`class_conditional`); 0 (default): unconditional.
      **kwargs: `keras.Model` arguments (name, ...).

    Call: images [B, H, W, C] integer in [0, levels) (and, for a conditional model, labels
      int [B]: `model(images, labels)` or `model({"images": ..., "labels": ...})`) -> logits
      [B, H, W, C, levels].

    Cached sampling (keras-hub's `call_with_cache` pattern): `step_weights`, `initial_cache`,
    `start_row`, `call_pixel`, `commit_pixel` and `end_row` compute the logits one pixel at a
    time in raster order, each layer with its own step methods; the sampler's loop
    (`sampling`) drives them.
    """

    def __init__(self, architecture="diagonal_bilstm", image_shape=(28, 28, 1), levels=256,
                 num_layers=7, hidden_dim=16, output_dim=None, residual=True, skip=True,
                 first_kernel=7, row_kernel=3, num_classes=0, **kwargs):
        super().__init__(**kwargs)
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        image_shape = tuple(int(d) for d in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got "
                             f"{image_shape}")
        channels = image_shape[2]
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if hidden_dim < channels:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be >= the channel count "
                             f"({channels}) so every colour group has features")
        if output_dim is None:
            output_dim = 32 if levels <= 16 else min(1024, 16 * levels)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: unconditional), got {num_classes}")
        if output_dim < channels:
            raise ValueError(f"output_dim ({output_dim}) must be >= the channel count "
                             f"({channels}) so every channel's logits have features")
        self.architecture = architecture
        self.image_shape = image_shape
        self.levels = int(levels)
        self.num_layers = int(num_layers)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.residual = bool(residual)
        self.skip = bool(skip)
        self.first_kernel = int(first_kernel)
        self.row_kernel = int(row_kernel)
        self.num_classes = int(num_classes)

        conv = lambda filters, size, mask, name: MaskedConv2D(
            filters, size, mask_type=mask, colour_groups=channels, name=name)
        self.first_conv = conv(2 * hidden_dim, first_kernel, "A", "first_conv")
        if architecture == "pixelcnn":
            self.body = [PixelCNNBlock(hidden_dim, channels, residual, name=f"block_{i}")
                         for i in range(num_layers)]
        else:
            self.body = [RecurrentBlock(architecture, hidden_dim, channels, residual,
                                        row_kernel, name=f"block_{i}")
                         for i in range(num_layers)]
        self.skip_convs = ([conv(2 * hidden_dim, 1, "B", f"skip_{i}") for i in range(num_layers)]
                           if skip else [])
        self.output_hidden = conv(output_dim, 1, "B", "output_hidden")
        self.output_logits = conv(channels * levels, 1, "B", "output_logits")
        if self.num_classes:
            self.label_embedding = keras.layers.Embedding(
                self.num_classes, sum(self.conditioning_dims), name="label_embedding")
        self.build()  # weights exist from construction: checkpoints and saving need them

    @property
    def num_dims(self):
        """Sub-pixels per image, H * W * C."""
        return int(np.prod(self.image_shape))

    @property
    def conditioning_dims(self):
        """Width of each block's additive conditioning map (4h recurrent, h PixelCNN)."""
        return [block.conditioning_dim for block in self.body]

    def build(self, input_shape=None):
        if self.built:
            return
        height, width, channels = self.image_shape
        features = (None, height, width, 2 * self.hidden_dim)
        self.first_conv.build((None, height, width, channels))
        for layer in self.body + self.skip_convs:
            layer.build(features)
        self.output_hidden.build(features)
        self.output_logits.build((None, height, width, self.output_dim))
        if self.num_classes:
            self.label_embedding.build((None,))
            # p(y), the training label frequencies (`set_label_prior`); uniform until set.
            self.label_log_prior = self.add_weight(
                name="label_log_prior", shape=(self.num_classes,), trainable=False,
                initializer=keras.initializers.Constant(-np.log(self.num_classes)))
        self.built = True

    def set_label_prior(self, counts):
        """Stores p(y) from the training label counts [K] (`class_conditional`)."""
        prior = label_counts_to_log_prior(counts)
        if prior.shape != (self.num_classes,):
            raise ValueError(f"{prior.shape[0]} label counts for a model of "
                             f"{self.num_classes} classes")
        self.label_log_prior.assign(prior)

    def block_conditioning(self, labels=None, conditioning=None):
        """Every block's additive conditioning: checked labels int32 [B] (or None) and/or
        per-block maps [B, H, W, X] (a Multi-Scale stage 2's) -> list of maps, the label's
        [B, 1, 1, X] broadcasting over the positions, or None when there is neither."""
        if labels is None:
            return conditioning
        vectors = tf.split(self.label_embedding(labels), self.conditioning_dims, axis=-1)
        maps = [v[:, None, None, :] for v in vectors]
        return maps if conditioning is None else [m + c for m, c in zip(maps, conditioning)]

    def scale_inputs(self, images):
        """Integer images [B, H, W, C] -> floats in [-1, 1] (the paper only scales and centres)."""
        return tf.cast(images, self.compute_dtype) * (2.0 / (self.levels - 1)) - 1.0

    def features(self, scaled_images, conditioning=None):
        """Body features before the output layers: scaled images [B, H, W, C] -> [B, H, W, 2h].

        Takes the float output of `scale_inputs`, so gradients w.r.t. the pixels exist
        (causality tests). conditioning: optional list with one additive map per block
        (Multi-Scale PixelRNN).
        """
        x = self.first_conv(scaled_images)
        skips = []
        for i, block in enumerate(self.body):
            x = block(x, conditioning=None if conditioning is None else conditioning[i])
            if self.skip:
                skips.append(self.skip_convs[i](x))
        return tf.add_n(skips) if self.skip else x

    def head(self, features):
        """[B, H, W, 2h] -> logits [B, H, W, C, levels]."""
        height, width, channels = self.image_shape
        logits = self.output_logits(tf.nn.relu(self.output_hidden(tf.nn.relu(features))))
        return tf.reshape(logits, (-1, height, width, channels, self.levels))

    def validate(self, images, labels=None):
        """Checked (int32 images [B, H, W, C], int32 labels [B] or None); see
        `validate_images` and `class_conditional.validate_labels`."""
        if isinstance(images, dict):
            if labels is not None or set(images) - {"images", "labels"}:
                raise ValueError("pass {'images': ..., 'labels': ...} alone")
            images, labels = images["images"], images.get("labels")
        images = validate_images(images, self.image_shape, self.levels)
        return images, validate_labels(labels, self.num_classes, images)

    def call(self, images, labels=None, conditioning=None):
        images, labels = self.validate(images, labels)
        return self.head(self.features(self.scale_inputs(images),
                                       self.block_conditioning(labels, conditioning)))

    def pixel_log_prob(self, images, labels=None):
        """[B, H, W, C] integer (labels [B] for a conditional model) -> [B, H, W, C] nats:
        log p of each sub-pixel given the past (and the label)."""
        images, labels = self.validate(images, labels)
        return losses.pixel_log_prob(self.head(self.features(
            self.scale_inputs(images), self.block_conditioning(labels))), images)

    def log_prob(self, images, labels=None):
        """[B, H, W, C] integer -> [B] exact log-likelihood in nats: log p(x), or log p(x | y)
        for a conditional model (`class_conditional.marginal_log_prob` gives its log p(x))."""
        return tf.reduce_sum(self.pixel_log_prob(images, labels), axis=[1, 2, 3])

    def bits_per_dim(self, images, labels=None):
        """[B, H, W, C] integer -> [B] negative log-likelihood in bits per sub-pixel."""
        return losses.nats_to_bits_per_dim(-self.log_prob(images, labels), self.num_dims)

    # The interface a `MultiScalePixelRNN` answers too, so that training, evaluation and
    # serving never ask which model they hold.

    def log_prob_terms(self, images, labels=None):
        """[B, H, W, C] integer (labels [B] for a conditional model) -> {"total": log p(x)
        [B]} nats, log p(x | y) for a conditional model (a Multi-Scale model adds the terms
        of its stages, which sum to the total)."""
        return {"total": self.log_prob(images, labels)}

    @property
    def term_dims(self):
        """{term of `log_prob_terms`: how many sub-pixels it scores}."""
        return {"total": self.num_dims}

    def describe(self):
        """What the SavedModel's JSON description says of the model (`serving`)."""
        described = {"architecture": self.architecture, "num_layers": self.num_layers,
                     "hidden_dim": self.hidden_dim}
        if self.num_classes:
            described["num_classes"] = self.num_classes
        return described

    def sampling_stages(self):
        """How the samplers draw an image of this model: one stage, the model itself."""
        return (SamplingStage(self),)

    # Cached sampling: `head(features(...))` one pixel at a time. Per pixel the loop calls
    # `call_pixel` once per channel (the pixel's value grows by one channel each time), then
    # `commit_pixel` with the last call's updates: no feature of pixel (i, j) reads its last
    # channel (mask A), so they are those of the finished pixel.

    def step_weights(self, conditioning=None):
        """What the steps read that no pixel changes, computed once before the loops: every
        layer's `step_weights`, and the conditioning maps (one per block, as for `features`)
        laid out [H, W, N, X] ([1, 1, N, X] for a label's, which every position reads), so
        that a position is one gather (`_at_row`, `_at_pixel`)."""
        dtype = self.compute_dtype
        if conditioning is not None:
            conditioning = [tf.transpose(tf.cast(m, dtype), (1, 2, 0, 3)) for m in conditioning]
        return {"first": self.first_conv.step_weights(dtype),
                "blocks": [block.step_weights(dtype) for block in self.body],
                "skips": [conv.step_weights(dtype) for conv in self.skip_convs],
                "hidden": self.output_hidden.step_weights(dtype),
                "logits": self.output_logits.step_weights(dtype),
                "conditioning": conditioning}

    def initial_cache(self, batch):
        """The cache before pixel (0, 0): {"image": the first convolution's buffer of the
        scaled image, "blocks": one cache per block}."""
        width, dtype = self.image_shape[1], self.compute_dtype
        return {"image": self.first_conv.initial_cache(batch, width, dtype),
                "blocks": [block.initial_cache(batch, width, dtype) for block in self.body]}

    def start_row(self, weights, cache, i):
        """Row i begins: returns (cache, per block what every pixel of the row reads)."""
        blocks, rows = [], []
        for block, block_weights, block_cache in zip(self.body, weights["blocks"],
                                                     cache["blocks"]):
            block_cache, row = block.start_row(block_weights, block_cache, i)
            blocks.append(block_cache)
            rows.append(row)
        return {"image": self.first_conv.start_row(cache["image"]), "blocks": blocks}, rows

    def call_pixel(self, weights, cache, rows, i, j, pixel):
        """Logits of pixel (i, j) given the finished pixels and `pixel` [N, C], the scaled
        values of its channels drawn so far (the masks ignore the others).

        Returns (logits [N, C, levels], per block what `commit_pixel` stores).
        """
        x = self.first_conv.call_pixel(weights["first"], cache["image"], j, pixel)
        conditioning = weights["conditioning"]
        updates, skips = [], []
        for k, block in enumerate(self.body):
            x, update = block.call_pixel(weights["blocks"][k], cache["blocks"][k], rows[k], j,
                                         x, _at_pixel(conditioning, k, i, j))
            updates.append(update)
            if self.skip:
                skips.append(self.skip_convs[k].call_pixel(weights["skips"][k], {}, j, x))
        features = tf.add_n(skips) if self.skip else x
        hidden = self.output_hidden.call_pixel(weights["hidden"], {}, j, tf.nn.relu(features))
        logits = self.output_logits.call_pixel(weights["logits"], {}, j, tf.nn.relu(hidden))
        return tf.reshape(logits, (-1, self.image_shape[2], self.levels)), updates

    def commit_pixel(self, weights, cache, j, pixel, updates):
        """Stores the finished pixel (i, j): `pixel` [N, C] scaled, `updates` of its last
        `call_pixel`."""
        return {"image": self.first_conv.commit_pixel(cache["image"], j, pixel),
                "blocks": [block.commit_pixel(w, c, j, u) for block, w, c, u in zip(
                    self.body, weights["blocks"], cache["blocks"], updates)]}

    def end_row(self, weights, cache, i):
        """After row i: the passes blocks make over the finished row (the Diagonal BiLSTM's
        right-to-left direction), all blocks' in one loop."""
        conditioning = weights["conditioning"]
        sweeps = [block.row_sweep(w, c, _at_row(conditioning, k, i))
                  for k, (block, w, c) in enumerate(zip(self.body, weights["blocks"],
                                                        cache["blocks"]))]
        if all(sweep is None for sweep in sweeps):
            return cache
        swept = iter(sweep_right_to_left([sweep for sweep in sweeps if sweep is not None]))
        return dict(cache, blocks=[
            c if sweep is None else block.finish_row(w, c, next(swept))
            for block, w, c, sweep in zip(self.body, weights["blocks"], cache["blocks"],
                                          sweeps)])

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Like `keras.Model.compile`; the loss defaults to the mean NLL (nats per image) and
        bits/dim is tracked. The target is always the input images: datasets yield images
        alone, or (images, labels), whose labels a conditional model is conditioned on and
        an unconditional one ignores."""
        super().compile(optimizer=optimizer,
                        loss=loss or losses.NegativeLogLikelihood(),
                        metrics=metrics if metrics is not None else [losses.BitsPerDim()],
                        **kwargs)

    def train_step(self, data):
        return super().train_step(fit_inputs(self, data))

    def test_step(self, data):
        return super().test_step(fit_inputs(self, data))

    def predict_step(self, data):
        return super().predict_step(fit_inputs(self, data))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        x = fit_target(x)
        return super().compute_loss(x, x, y_pred, sample_weight, training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        x = fit_target(x)
        return super().compute_metrics(x, x, y_pred, sample_weight)

    @classmethod
    def from_preset(cls, name: str) -> PixelRNN:
        """The pretrained PixelRNN `name` shipped with the package (`pixelrnn_tf.presets`,
        `pixelrnn_tf.list_presets()`): its file's sha256 checked, loaded with safe_mode on.
        Raises ValueError (one line) for an unknown name, a preset of another model class or
        a file that does not match its sha256."""
        from pixelrnn_tf import presets

        return presets.load_preset(name, cls)

    def get_config(self):
        config = super().get_config()
        config.update(architecture=self.architecture, image_shape=list(self.image_shape),
                      levels=self.levels, num_layers=self.num_layers,
                      hidden_dim=self.hidden_dim, output_dim=self.output_dim,
                      residual=self.residual, skip=self.skip,
                      first_kernel=self.first_kernel, row_kernel=self.row_kernel)
        if self.num_classes:
            config["num_classes"] = self.num_classes
        return config


def _at_pixel(conditioning, k, i, j):
    """Block k's conditioning at pixel (i, j) from `step_weights`' layout: [N, X] or None."""
    if conditioning is None:
        return None
    m = conditioning[k]
    return m[i if m.shape[0] != 1 else 0, j if m.shape[1] != 1 else 0]


def _at_row(conditioning, k, i):
    """Block k's conditioning along row i: [W, N, X] or [1, N, X] (broadcasts), or None."""
    if conditioning is None:
        return None
    m = conditioning[k]
    return m[i if m.shape[0] != 1 else 0]


def fit_inputs(model, data):
    """`fit` / `evaluate` / `predict` data of a conditional model: (images, labels[,
    sample_weight]) -> ({"images", "labels"}, None[, sample_weight]), so that Keras calls
    `model({"images", "labels"})`; an unconditional model's data as it is (its labels, if
    any, ignored)."""
    if not model.num_classes or isinstance(data, dict):
        return data
    if not isinstance(data, (tuple, list)) or len(data) < 2 or isinstance(data[0], dict):
        return data
    return ({"images": data[0], "labels": data[1]}, None, *data[2:])


def fit_target(x):
    """The images a loss scores, from what `fit` passed as x."""
    return x["images"] if isinstance(x, dict) else x
