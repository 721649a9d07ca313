"""`data_prep convert`: sources -> sharded TFRecords + manifest.json, written atomically.

In steps: options (`data_prep.options`: the flags parsed and checked) -> plan
(`data_prep.plan`: sources opened, splits chosen and carved, shape, levels, labels and shard
layout settled) -> write (`data_prep.write`: the shards, into a hidden temporary directory
beside the output) -> manifest (this module), after which the directory is renamed into
place. Everything is checked before anything is written; an error or interrupt removes the
temporary directory, so a failed convert leaves nothing that looks like a dataset.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Callable, Sequence

from data_prep.errors import DataPrepError
from data_prep.options import (
    Binarize,
    ConvertOptions,
    parse_binarize,
    parse_compression,
    parse_mapping,
    parse_options,
    parse_shards,
)
from data_prep.plan import Plan, make_plan, select_splits
from data_prep.write import check_out_dir, staging_dir, write_splits

# Names other code imports from here.
__all__ = ["Binarize", "check_out_dir", "convert", "parse_binarize", "parse_compression",
           "parse_mapping", "parse_shards", "select_splits"]

_SPLIT_ORDER = ["train", "validation", "test"]  # manifest order; other splits after, by name


def convert(
    sources: Sequence[str],
    out: str,
    *,
    name: str | None = None,
    splits: str | None = None,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    seed: int = 0,
    shards=None,
    workers: int = 1,
    compression: str | None = None,
    binarize: str | None = None,
    levels: int | None = None,
    source_levels: int | None = None,
    resize: int | None = None,
    grayscale: bool = False,
    shuffle: bool = True,
    limit: int | None = None,
    overwrite: bool = False,
    label_names: Sequence[str] | None = None,
    key: str | None = None,
    label_key: str | None = None,
    split_keys=None,
    split_label_keys=None,
    image_shape=None,
    tfds_data_dir: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Converts SOURCE strings into a dataset directory `out`; returns the manifest dict.

    The keyword arguments are the flags of `python -m data_prep convert` (as strings or
    already parsed values). Raises DataPrepError (one-line message) for any problem with the
    inputs or options.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    options = parse_options(
        sources, out, name=name, splits=splits, val_fraction=val_fraction,
        test_fraction=test_fraction, seed=seed, shards=shards, workers=workers,
        compression=compression, binarize=binarize, levels=levels, source_levels=source_levels,
        resize=resize, grayscale=grayscale, shuffle=shuffle, limit=limit, overwrite=overwrite,
        label_names=label_names, key=key, label_key=label_key, split_keys=split_keys,
        split_label_keys=split_label_keys, image_shape=image_shape, tfds_data_dir=tfds_data_dir)
    check_out_dir(options.out, options.overwrite)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before planning imports TensorFlow
    plan = make_plan(options, log)

    from pixelrnn_tf import data as fmt

    with staging_dir(os.path.abspath(options.out)) as tmp:
        split_entries, max_label = write_splits(plan, tmp, options.compression, options.limit,
                                                log)
        manifest = build_manifest(options, plan, split_entries, max_label)
        fmt.parse_manifest(manifest, options.out)  # the writer obeys its own contract
        with open(os.path.join(tmp, fmt.MANIFEST_NAME), "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
    return manifest


def build_manifest(options: ConvertOptions, plan: Plan, split_entries: dict,
                   max_label: int) -> dict:
    """The manifest.json of a written dataset (see `pixelrnn_tf.data.parse_manifest`)."""
    from pixelrnn_tf import data as fmt
    from pixelrnn_tf import records

    names = plan.label_names
    if names is not None and max_label >= len(names):
        raise DataPrepError(f"label {max_label} has no name ({len(names)} label names)")
    num_classes = (len(names) if names else max_label + 1) if plan.has_labels else None
    split_entries = dict(sorted(
        split_entries.items(), key=lambda kv: (_SPLIT_ORDER.index(kv[0]) if kv[0] in _SPLIT_ORDER
                                               else len(_SPLIT_ORDER), kv[0])))
    return {
        "format": fmt.FORMAT_NAME,
        "format_version": fmt.FORMAT_VERSION,
        "dataset": options.name or plan.sources[0].dataset_name,
        "source": " + ".join(s.description for s in plan.sources),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "created_by": "data_prep (pixelrnn_tf)",
        "image_shape": list(plan.image_shape),
        "levels": plan.levels,
        "compression": options.compression,
        "has_labels": plan.has_labels,
        "num_classes": num_classes,
        "label_names": names,
        "features": {k: v for k, v in records.FEATURES_DOC.items()
                     if plan.has_labels or k != "label"},
        "preprocessing": {
            "source_levels": plan.source_levels,
            "grayscale": bool(options.grayscale),
            "resize": options.resize,
            "binarize": options.binarize.describe() if options.binarize else None,
            "requantized_to": plan.levels if plan.transform.requantize else None,
            "shuffled_splits": [o.name for job in plan.jobs for o in job.outputs
                                if o.name == "train" and options.shuffle
                                and job.split.random_access],
            "seed": options.seed,
            "limit": options.limit,
        },
        "splits": split_entries,
    }
