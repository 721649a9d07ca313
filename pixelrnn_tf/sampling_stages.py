"""Sampling stages: how a model's image is drawn, as a sequence of single-scale models.

A `PixelRNN` is one stage. A `MultiScalePixelRNN` has two: the small image, then the full
image given it. The samplers (`sampling`) run the stages in turn, each with its own noise
stream, and never ask which model they hold. A class-conditional model's stages are all
conditioned on the label.
"""

from __future__ import annotations


class SamplingStage:
    """One stage: `model`, a `PixelRNN`, draws the pixels of its image in raster order.

    This base class is a whole single-scale model: its image is the model's image, nothing is
    fixed by earlier stages, nothing conditions it. A multi-stage model subclasses it.

    Attributes:
      model: the `PixelRNN` that draws this stage.
      fixed: None, or numpy bool [h * w] (the stage's raster order): pixels earlier stages
        drew, copied and never resampled.
    """

    fixed = None

    def __init__(self, model):
        self.model = model

    def select(self, images):
        """The model's images int [N, H, W, C] -> this stage's images [N, h, w, C]."""
        return images

    def known_pixels(self, known_pixels):
        """How many pixels of this stage's image (raster order) are known when the first
        `known_pixels` of the model's image are (int32 scalar -> int32 scalar)."""
        return known_pixels

    def conditioning(self, images, labels=None):
        """One additive map per block of `model` (as for `PixelRNN.features`), computed from
        the model's images int [N, H, W, C] as earlier stages left them and the checked
        labels int32 [N] of a conditional model, or None."""
        return self.model.block_conditioning(labels)

    def place(self, images, drawn):
        """The model's images [N, H, W, C] with this stage's `drawn` images written in."""
        return drawn
