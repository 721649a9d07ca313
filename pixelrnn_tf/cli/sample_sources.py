"""Where a `pixelrnn-sample` run's model comes from, behind one sampler interface
(`image_shape`, `levels`, `num_classes`, `sample`, `complete`): an in-memory PixelRNN
(--workdir, --keras-model, --preset: `ModelSampler`) or the signatures of an exported
SavedModel (--saved-model: `SavedModelSampler`). `make_sampler` picks one from the flags.
"""

from __future__ import annotations

import os

import numpy as np

from pixelrnn_tf.cli import first_line
from pixelrnn_tf.cli.sample_inputs import SampleError


class ModelSampler:
    """Samples with an in-memory PixelRNN (`pixelrnn_tf.sampling`)."""

    def __init__(self, model, method="cached"):
        self.model, self.method = model, method
        self.image_shape, self.levels = tuple(model.image_shape), model.levels
        self.num_classes = model.num_classes  # 0: unconditional

    def sample(self, num, seed, temperature, labels=None):
        from pixelrnn_tf import sampling

        return np.asarray(sampling.sample(self.model, num, seed, temperature, self.method,
                                          labels=labels))

    def complete(self, images, known_pixels, seed, temperature, labels=None):
        from pixelrnn_tf import sampling

        return np.asarray(sampling.complete(self.model, images, known_pixels, seed,
                                            temperature, self.method, labels=labels))


class SavedModelSampler:
    """Samples through the `sample` / `complete` signatures of an export (in batches of at
    most its max_batch). A class-conditional export's signatures take ``labels``; its
    metadata's ``num_classes`` gives K (None when it has no metadata: the export's own
    checks then judge the labels)."""

    def __init__(self, export_dir, levels=None):
        import tensorflow as tf

        from pixelrnn_tf import serving

        if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
            raise SampleError(f"--saved-model {export_dir}: no saved_model.pb (pass a version "
                              "directory such as EXPORT_BASE/1)")
        try:
            metadata = serving.read_metadata(export_dir)
        except (ValueError, OSError) as e:
            raise SampleError(f"--saved-model {export_dir}: {e}") from None
        loaded = tf.saved_model.load(export_dir)
        missing = [s for s in ("sample", "complete") if s not in loaded.signatures]
        if missing:
            raise SampleError(f"--saved-model {export_dir}: no {', '.join(missing)} signature")
        self.loaded, self.tf = loaded, tf
        inputs = loaded.signatures["complete"].structured_input_signature[1]
        self.image_shape = tuple(int(d) for d in inputs["images"].shape[1:])
        if levels is None:
            if metadata is None:
                raise SampleError(f"--saved-model {export_dir} has no {serving.METADATA_PATH} "
                                  "to tell its number of levels; pass --levels")
            levels = int(metadata["levels"])
        self.levels = levels
        self.max_batch = int(metadata["max_batch"]) if metadata else 1
        conditional = "labels" in inputs
        num_classes = int(metadata.get("num_classes", 0)) if metadata else None
        if metadata is not None and conditional != bool(num_classes):
            raise SampleError(
                f"--saved-model {export_dir}: its {serving.METADATA_PATH} says num_classes="
                f"{num_classes} but its signatures {'take' if conditional else 'have no'} "
                "labels")
        # 0: unconditional; None: conditional with K unknown (no metadata)
        self.num_classes = num_classes if conditional else 0

    def _batches(self, num):
        return [(start, min(num, start + self.max_batch)) for start in range(0, num,
                                                                             self.max_batch)]

    def _labels(self, labels, start, stop):
        if labels is None:
            return {}
        return {"labels": self.tf.constant(np.asarray(labels[start:stop]), self.tf.int32)}

    def _run(self, requests, labels):
        if labels is None:
            return [request().numpy() for request in requests]
        try:
            return [request().numpy() for request in requests]
        except self.tf.errors.InvalidArgumentError as e:  # the export's label checks
            raise SampleError(f"--saved-model: the export refused the labels: "
                              f"{assertion_text(e.message)}") from None

    def sample(self, num, seed, temperature, labels=None):
        # Batch k of a request larger than max_batch is drawn with seed + k.
        tf, sign = self.tf, self.loaded.signatures["sample"]
        parts = self._run([
            lambda k=k, start=start, stop=stop: sign(
                num_samples=tf.constant(stop - start, tf.int32),
                seed=tf.constant(seed + k, tf.int64),
                temperature=tf.constant(temperature, tf.float32),
                **self._labels(labels, start, stop))["images"]
            for k, (start, stop) in enumerate(self._batches(num))], labels)
        return np.concatenate(parts) if parts else np.zeros((0, *self.image_shape), np.uint8)

    def complete(self, images, known_pixels, seed, temperature, labels=None):
        tf, sign = self.tf, self.loaded.signatures["complete"]
        parts = self._run([
            lambda k=k, start=start, stop=stop: sign(
                images=tf.constant(images[start:stop].astype(np.uint8)),
                known_pixels=tf.constant(known_pixels, tf.int32),
                seed=tf.constant(seed + k, tf.int64),
                temperature=tf.constant(temperature, tf.float32),
                **self._labels(labels, start, stop))["images"]
            for k, (start, stop) in enumerate(self._batches(len(images)))], labels)
        return np.concatenate(parts)


def assertion_text(message):
    """The message of a failed in-graph check ("assertion failed: [labels must be < 3] ...")
    from an error's text, or its last line that says anything."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith("assertion failed: ["):
            return line[len("assertion failed: ["):].split("]", 1)[0].strip()
    useful = [line for line in lines if not line.startswith(
        ("Graph execution error", "Detected at node", "<stack traces", "[["))]
    return (useful or lines or ["invalid argument"])[-1]


def make_sampler(args):
    """The sampler of the model the parsed flags name (--saved-model, --preset, --workdir
    or --keras-model)."""
    from pixelrnn_tf.workdir import TrainingError, load_model

    if args.saved_model:
        return SavedModelSampler(args.saved_model, args.levels)
    if args.preset is not None:
        from pixelrnn_tf.presets import load_preset

        return ModelSampler(load_preset(args.preset), args.method)
    if args.workdir is not None and not os.path.isdir(args.workdir):
        raise SampleError(f"--workdir {args.workdir}: no such directory")
    if args.keras_model is not None and not os.path.isfile(args.keras_model):
        raise SampleError(f"--keras-model {args.keras_model}: no such file")
    try:
        model = load_model(args.workdir or args.keras_model, args.checkpoint)
    except (TrainingError, OSError, ValueError) as e:
        # A .keras file's errors start with its path: name the flag, as for a missing file.
        prefix = "" if args.workdir is not None else "--keras-model "
        raise SampleError(f"{prefix}{first_line(e)}") from None
    return ModelSampler(model, args.method)
