"""examples/serving/: the TF Serving config files parse as the protos tensorflow_model_server
reads them into (text format), the version labels point at served versions, and the batching
parameters fit the export's largest batch (--max-batch, default serving.DEFAULT_MAX_BATCH).

`tensorflow-serving-api` ships ModelServerConfig but not BatchingParameters (it lives in
tensorflow_serving/servables/tensorflow/session_bundle_config.proto, which no wheel carries);
without it the message is declared here with that file's field names, numbers and types, so
a misspelt field or a wrong type fails to parse as it would in the server."""

import re

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from pixelrnn_tf import serving

from cli_fixtures import ROOT

model_server_config_pb2 = pytest.importorskip(
    "tensorflow_serving.config.model_server_config_pb2",
    reason="pip install --no-deps tensorflow-serving-api")

CONFIGS = ROOT / "examples" / "serving"


def batching_parameters_class():
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    except ImportError:
        pass
    else:
        return session_bundle_config_pb2.BatchingParameters
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    for number, name, wrapper in [(1, "max_batch_size", "Int64Value"),
                                  (2, "batch_timeout_micros", "Int64Value"),
                                  (3, "max_enqueued_batches", "Int64Value"),
                                  (4, "num_batch_threads", "Int64Value"),
                                  (5, "thread_pool_name", "StringValue")]:
        message.field.add(name=name, number=number, label=field.LABEL_OPTIONAL,
                          type=field.TYPE_MESSAGE, type_name=f".google.protobuf.{wrapper}")
    message.field.add(name="allowed_batch_sizes", number=6, label=field.LABEL_REPEATED,
                      type=field.TYPE_INT64)
    message.field.add(name="pad_variable_length_inputs", number=7, label=field.LABEL_OPTIONAL,
                      type=field.TYPE_BOOL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def test_models_config():
    config = text_format.Parse((CONFIGS / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "pixelrnn" and model.model_platform == "tensorflow"
    assert model.base_path.startswith("/")  # the server resolves no relative path
    versions = list(model.model_version_policy.specific.versions)
    assert len(versions) == 2 and len(set(versions)) == 2
    labels = dict(model.version_labels)
    assert labels == {"stable": min(versions), "canary": max(versions)}
    assert set(labels.values()) <= set(versions)


def test_batching_parameters_fit_the_exports_max_batch():
    text = (CONFIGS / "batching_parameters.txt").read_text()
    params = text_format.Parse(text, batching_parameters_class()())
    sizes = list(params.allowed_batch_sizes)
    assert sizes and sizes[0] >= 1 and sizes == sorted(set(sizes))
    # TF Serving requires the last allowed size to equal max_batch_size; the export's in-graph
    # check refuses a merged batch above its --max-batch.
    assert sizes[-1] == params.max_batch_size.value == serving.DEFAULT_MAX_BATCH
    assert re.search(r"export\.py's\s+# default: (\d+)\)", text).group(1) == \
        str(serving.DEFAULT_MAX_BATCH)
    assert params.num_batch_threads.value >= 1 and params.batch_timeout_micros.value >= 0
    for field in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                  "max_enqueued_batches"):
        assert params.HasField(field), field
    # The schema is a real check: a misspelt field or a wrong type does not parse.
    for bad in ("max_batch_sise { value: 64 }", "max_batch_size: 64",
                "allowed_batch_sizes: 1.5"):
        with pytest.raises(text_format.ParseError):
            text_format.Parse(bad, batching_parameters_class()())
