"""Export a trained PixelRNN or Multi-Scale PixelRNN as a versioned SavedModel for TF Serving.

The command is `pixelrnn_tf.cli.export` (also installed as the console script
`pixelrnn-export`); see `python export.py --help`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pixelrnn_tf.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
