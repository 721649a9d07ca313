"""data_prep: turn image datasets into verified, sharded TFRecords (see `python -m data_prep`).

The TFRecord/manifest format itself is defined by the reader, `pixelrnn_tf.data`.
"""
