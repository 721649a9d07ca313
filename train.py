"""Train or evaluate a PixelRNN: `python train.py --data DIR --workdir DIR [--preset NAME]`.

The command is `pixelrnn_tf.cli.train` (also installed as the console script `pixelrnn-train`);
see `python train.py --help`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pixelrnn_tf.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
