"""pixelrnn_tf: PixelRNN (van den Oord et al., 2016) for TensorFlow / Keras 3."""

import os

# TensorFlow prints its C++ INFO banner when it loads, below: the console scripts enter
# through this package (pixelrnn_tf.cli), and their errors are one line on stderr. A level
# set by the user wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow's default CPU allocator hands every freed tensor back to malloc. After a process
# has run the Trainer's first steps, glibc then returns that memory to the kernel and faults
# it in again on every step: 9x the page faults, ~30x the system time, and every later train
# step about 2x slower (docs/benchmarks.md, issue 20). TensorFlow's BFC allocator keeps freed
# memory for reuse. TensorFlow reads this when it creates its first device, so it applies
# when pixelrnn_tf is imported before any TensorFlow op runs; a value set by the user wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

from pixelrnn_tf.blocks import PixelCNNBlock, RecurrentBlock
from pixelrnn_tf.class_conditional import classify, marginal_log_prob
from pixelrnn_tf.diagonal_lstm import DiagonalBiLSTM, DiagonalLSTM
from pixelrnn_tf.losses import BitsPerDim, NegativeLogLikelihood, nats_to_bits_per_dim
from pixelrnn_tf.masked_conv import MaskedConv2D
from pixelrnn_tf.masks import causal_mask
from pixelrnn_tf.model import ARCHITECTURES, PixelRNN
from pixelrnn_tf.multiscale import MultiScalePixelRNN
from pixelrnn_tf.presets import list_presets
from pixelrnn_tf.row_lstm import RowLSTM

# Every model class a work directory or a .keras file may hold (`pixelrnn_tf.workdir`).
MODEL_CLASSES = (PixelRNN, MultiScalePixelRNN)

__all__ = [
    "ARCHITECTURES", "BitsPerDim", "DiagonalBiLSTM", "DiagonalLSTM", "MODEL_CLASSES",
    "MaskedConv2D", "MultiScalePixelRNN", "NegativeLogLikelihood", "PixelCNNBlock", "PixelRNN",
    "RecurrentBlock", "RowLSTM",
    "causal_mask", "classify", "list_presets", "marginal_log_prob", "nats_to_bits_per_dim",
]
__version__ = "0.1.0"
