"""data_prep: turn image datasets into verified, sharded TFRecords (see `python -m data_prep`).

The record format is defined once by `pixelrnn_tf.records` (the codec) and the manifest by
`pixelrnn_tf.data` (the reader).
"""
