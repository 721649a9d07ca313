"""The entry points of training, for scripts written against the earlier single module.

Each name has its home elsewhere: `pixelrnn_tf.trainer` (train_and_evaluate, evaluate,
Preempted) and `pixelrnn_tf.workdir` (load_model, TrainingError).
"""

from pixelrnn_tf.trainer import Preempted, evaluate, train_and_evaluate
from pixelrnn_tf.workdir import TrainingError, load_model

__all__ = ["Preempted", "TrainingError", "evaluate", "load_model", "train_and_evaluate"]
