"""The options of one `data_prep convert`: flag strings parsed and checked into `ConvertOptions`.

Nothing here touches the file system or the sources; every problem is a one-line
DataPrepError naming the flag.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from data_prep import imaging
from data_prep.errors import DataPrepError
from data_prep.sources import SourceOptions


def parse_mapping(text: str | None, flag: str) -> dict[str, str] | None:
    """'train=a,test=b' -> {'train': 'a', 'test': 'b'}."""
    if text is None:
        return None
    out = {}
    for part in text.split(","):
        k, eq, v = part.partition("=")
        if not eq or not k or not v:
            raise DataPrepError(f"{flag} {text!r}: expected NAME=VALUE[,NAME=VALUE...]")
        if k in out:
            raise DataPrepError(f"{flag} {text!r}: {k!r} given twice")
        out[k.strip()] = v.strip()
    return out


@dataclasses.dataclass(frozen=True)
class Binarize:
    kind: str  # "threshold" or "stochastic"
    value: float  # threshold in [0, 1) of the maximum level, or the seed

    def describe(self) -> str:
        v = int(self.value) if self.kind == "stochastic" else self.value
        return f"{self.kind}:{v}"


def parse_binarize(text: str | None) -> Binarize | None:
    if text is None:
        return None
    kind, _, value = text.partition(":")
    try:
        if kind == "threshold":
            t = float(value)
            if not 0.0 <= t < 1.0:
                raise ValueError
            return Binarize(kind, t)
        if kind == "stochastic":
            return Binarize(kind, int(value))
    except ValueError:
        pass
    raise DataPrepError(f"--binarize {text!r}: expected threshold:T (0 <= T < 1, a fraction "
                        "of the top level) or stochastic:SEED")


def parse_shards(text) -> int | dict[str, int] | None:
    if text is None or isinstance(text, (int, dict)):
        shards = text
    else:
        try:
            shards = int(text)
        except ValueError:
            m = parse_mapping(text, "--shards")
            try:
                shards = {k: int(v) for k, v in m.items()}
            except ValueError:
                shards = {"": 0}
    values = [shards] if isinstance(shards, int) else list((shards or {}).values())
    if any(v < 1 for v in values):
        raise DataPrepError(f"--shards {text!r}: expected a positive integer or "
                            "SPLIT=N[,SPLIT=N...]")
    return shards


def parse_compression(text: str | None) -> str | None:
    if text is None or text.lower() in ("", "none"):
        return None
    if text.upper() == "GZIP":
        return "GZIP"
    raise DataPrepError(f"--compression {text!r}: expected GZIP or none")


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """Every option of one convert, checked, with flag strings parsed (see `convert`)."""

    sources: tuple[str, ...]
    out: str  # normalized
    name: str | None
    splits: str | None  # the --splits spec, applied by `plan.select_splits`
    val_fraction: float
    test_fraction: float
    seed: int
    shards: int | dict[str, int] | None  # per split, or for all; None: by size
    workers: int
    compression: str | None  # None or "GZIP"
    binarize: Binarize | None
    levels: int | None
    source_levels: int | None
    resize: int | None
    grayscale: bool
    shuffle: bool
    limit: int | None
    overwrite: bool
    label_names: list[str] | None
    source: SourceOptions  # how to open the sources


def _check_ranges(sources, val_fraction, test_fraction, levels, source_levels, resize, limit,
                  workers):
    if not sources:
        raise DataPrepError("no SOURCE given")
    for flag, frac in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise DataPrepError(f"{flag} {frac}: expected a fraction in [0, 1)")
    if levels is not None and not 2 <= levels <= 256:
        raise DataPrepError(f"--levels {levels}: expected 2..256")
    if source_levels is not None and not 2 <= source_levels <= 256:
        raise DataPrepError(f"--source-levels {source_levels}: expected 2..256")
    if resize is not None and resize < 1:
        raise DataPrepError(f"--resize {resize}: expected a positive size")
    if limit is not None and limit < 1:
        raise DataPrepError(f"--limit {limit}: expected a positive count")
    if workers < 1:
        raise DataPrepError(f"--workers {workers}: expected a positive count")


def parse_options(sources: Sequence[str], out: str, *, name, splits, val_fraction,
                  test_fraction, seed, shards, workers, compression, binarize, levels,
                  source_levels, resize, grayscale, shuffle, limit, overwrite, label_names,
                  key, label_key, split_keys, split_label_keys, image_shape,
                  tfds_data_dir) -> ConvertOptions:
    """`convert`'s arguments (flag strings or parsed values) -> ConvertOptions."""
    _check_ranges(sources, val_fraction, test_fraction, levels, source_levels, resize, limit,
                  workers)
    if isinstance(binarize, str) or binarize is None:
        binarize = parse_binarize(binarize)
    if binarize and levels is not None:
        raise DataPrepError("--binarize and --levels are exclusive (binarizing gives 2 levels)")
    compression = parse_compression(compression)
    shards = parse_shards(shards)
    if isinstance(split_keys, str):
        split_keys = parse_mapping(split_keys, "--split-keys")
    if isinstance(split_label_keys, str):
        split_label_keys = parse_mapping(split_label_keys, "--split-label-keys")
    if isinstance(image_shape, str):
        image_shape = imaging.parse_image_shape(image_shape)
    elif image_shape is not None:
        image_shape = tuple(image_shape) if len(image_shape) == 3 else tuple(image_shape) + (1,)
    source = SourceOptions(key=key, label_key=label_key, split_keys=split_keys,
                           split_label_keys=split_label_keys, image_shape=image_shape,
                           resize=resize, grayscale=grayscale, tfds_data_dir=tfds_data_dir)
    return ConvertOptions(
        sources=tuple(sources), out=os.path.normpath(out), name=name, splits=splits,
        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, shards=shards,
        workers=workers, compression=compression, binarize=binarize, levels=levels,
        source_levels=source_levels, resize=resize, grayscale=grayscale, shuffle=shuffle,
        limit=limit, overwrite=overwrite,
        label_names=list(label_names) if label_names else None, source=source)
