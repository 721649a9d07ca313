"""What one `data_prep convert` will write, decided before anything is written.

`make_plan` opens the sources, picks which input split becomes which output split (--splits),
carves validation/test out of train, settles the output image shape, levels and labels, and
lays out the shards of every output split. Every problem is a one-line DataPrepError.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import numpy as np

from data_prep.errors import DataPrepError
from data_prep.imaging import Transform
from data_prep.options import ConvertOptions
from data_prep.sources import ImageFilesSplit, InputSplit, open_source

SHARD_TARGET_BYTES = 128 << 20  # default shard size: ~100-200 MB
RECORD_OVERHEAD = 64  # bytes of Example framing per image, for shard sizing


@dataclasses.dataclass
class Output:
    """One output split of a job: its name, the source indices in write order, its shards."""

    name: str
    indices: np.ndarray
    num_shards: int = 0


@dataclasses.dataclass
class Job:
    """One input split and the output split(s) it is written to."""

    split: InputSplit
    n: int  # examples used (after --limit)
    outputs: list[Output]


@dataclasses.dataclass
class Plan:
    sources: list  # the opened sources
    jobs: list[Job]
    image_shape: tuple[int, int, int]  # after the transforms
    source_levels: int
    levels: int  # after the transforms
    transform: Transform
    has_labels: bool
    label_names: list[str] | None


def make_plan(options: ConvertOptions, log: Callable[[str], None]) -> Plan:
    srcs = open_sources(options, log)
    chosen = select_splits(srcs, options.splits)
    jobs = _carve(chosen, options)
    image_shape = _image_shape(jobs, options)
    src_levels = options.source_levels or max(j.split.levels for j in jobs)
    if options.levels is not None and options.levels > src_levels:
        raise DataPrepError(f"--levels {options.levels} is more than the source's {src_levels} "
                            "levels")
    out_levels = 2 if options.binarize else (options.levels or src_levels)
    transform = Transform(src_levels, out_levels, options.grayscale, options.resize,
                          options.binarize,
                          options.levels is not None and options.levels != src_levels)
    has_labels, names = _labels(srcs, jobs, options, log)
    _lay_out_shards(jobs, int(np.prod(image_shape)), options)
    return Plan(srcs, jobs, image_shape, src_levels, out_levels, transform, has_labels, names)


def open_sources(options: ConvertOptions, log) -> list:
    """Opens every SOURCE; refuses an --out that overlaps one; logs the sources' notes."""
    srcs = [open_source(s, options.source) for s in options.sources]
    out_abs = os.path.abspath(options.out)
    for src in srcs:
        for p in src.paths:
            pa = os.path.abspath(p)
            common = os.path.commonpath([out_abs, pa])
            if common == out_abs or (common == pa and os.path.isdir(pa)):
                raise DataPrepError(f"--out {options.out} overlaps the source {p}")
        for note in dict.fromkeys(src.notes):
            log(f"note: {src.spec}: {note}")
    return srcs


# ----------------------------------------------------------------------------- splits


def _available(sources):
    """[(source index, input split name)] offered by the sources."""
    out = []
    for i, src in enumerate(sources):
        names = src.default_split_names if src.select else [s.name for s in src.splits]
        out += [(i, n) for n in names]
    return out


def _materialize(sources, i, name) -> InputSplit:
    src = sources[i]
    if src.select:
        return src.select(name)
    return next(s for s in src.splits if s.name == name)


def _select_pairs(sources, avail, names, entries) -> list[tuple[str, InputSplit]]:
    """--splits OUT=IN[,...] (NAME alone means NAME=NAME)."""
    chosen = []
    for e in entries:
        out, eq, inn = e.partition("=")
        if not eq:
            inn = out
        hits = [(i, n) for i, n in avail if n == inn]
        if len(hits) > 1:
            raise DataPrepError(f"--splits: input split {inn!r} is given by several "
                                "sources; name the splits in order instead")
        if hits:
            chosen.append((out, _materialize(sources, *hits[0])))
        elif len(sources) == 1 and sources[0].select:
            chosen.append((out, sources[0].select(inn)))
        else:
            raise DataPrepError(f"--splits: no input split {inn!r} (available: "
                                f"{', '.join(names)})")
    return chosen


def select_splits(sources, spec: str | None) -> list[tuple[str, InputSplit]]:
    """Applies --splits: which input split becomes which output split."""
    avail = _available(sources)
    names = [n for _, n in avail]
    if spec is None:
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataPrepError(f"several sources give split {dupes[0]!r}; name the splits in "
                                "order with --splits, e.g. --splits train,test")
        return [(n, _materialize(sources, i, n)) for i, n in avail]
    entries = [e.strip() for e in spec.split(",")]
    if not all(entries):
        raise DataPrepError(f"--splits {spec!r}: empty name")
    if any("=" in e for e in entries):
        chosen = _select_pairs(sources, avail, names, entries)
    elif len(set(entries)) == len(entries) and all(names.count(e) == 1 for e in entries):
        chosen = [(e, _materialize(sources, *next(a for a in avail if a[1] == e)))
                  for e in entries]
    elif len(entries) == len(avail):
        chosen = [(e, _materialize(sources, i, n)) for e, (i, n) in zip(entries, avail)]
    elif len(sources) == 1 and sources[0].select:
        chosen = [(e, sources[0].select(e)) for e in entries]
    else:
        raise DataPrepError(f"--splits {spec!r}: the sources give {len(avail)} split(s) "
                            f"({', '.join(names)}); name all of them in order, pick some by "
                            "name, or use OUT=IN")
    from pixelrnn_tf import records  # the format's split-name rule (imports TensorFlow)

    outs = [o for o, _ in chosen]
    for o in outs:
        if not records.is_split_name(o):
            raise DataPrepError(f"--splits: bad split name {o!r} (use letters, digits, _ or .)")
        if outs.count(o) > 1:
            raise DataPrepError(f"--splits: split {o!r} named twice")
    return chosen


def _carve(chosen, options: ConvertOptions) -> list[Job]:
    """One job per chosen split: --limit, the --val/--test-fraction carved out of train, and
    the order (train shuffled when it has random access and --shuffle)."""
    val_fraction, test_fraction = options.val_fraction, options.test_fraction
    rng = np.random.default_rng(options.seed)
    names = [o for o, _ in chosen]
    carve = [("validation", val_fraction), ("test", test_fraction)]
    for target, frac in carve:
        if frac and target in names:
            raise DataPrepError(f"--{'val' if target == 'validation' else 'test'}-fraction: "
                                f"there is already a {target} split")
    if (val_fraction or test_fraction) and "train" not in names:
        raise DataPrepError("--val-fraction/--test-fraction carve from the train split, and "
                            f"there is none (splits: {', '.join(names)}; see --splits)")
    jobs = []
    for out, split in chosen:
        limit = options.limit
        n = split.num_examples if limit is None else min(split.num_examples, limit)
        if n == 0:
            raise DataPrepError(f"{split.where}: split {out!r} has no examples")
        do_shuffle = options.shuffle and out == "train" and split.random_access
        if out == "train" and (val_fraction or test_fraction):
            perm = rng.permutation(n)
            outputs, start = [], 0
            for target, frac in carve:
                k = int(round(frac * n))
                if frac and k == 0:
                    raise DataPrepError(f"{target} fraction {frac} of {n} examples is empty")
                if k:
                    outputs.append(Output(target, np.sort(perm[start:start + k])))
                start += k
            if start >= n:
                raise DataPrepError("--val-fraction + --test-fraction leave no training "
                                    "examples")
            rest = perm[start:]
            outputs.insert(0, Output("train", rest if do_shuffle else np.sort(rest)))
        else:
            outputs = [Output(out, rng.permutation(n) if do_shuffle else np.arange(n))]
        jobs.append(Job(split, n, outputs))
    return jobs


# ----------------------------------------------------------------------------- images, labels


def _image_shape(jobs, options: ConvertOptions) -> tuple[int, int, int]:
    """The image shape after the transforms; it must be the same in every split."""
    def final_shape(s: InputSplit):
        h, w, c = s.image_shape
        if options.grayscale:
            c = 1
        if options.resize:
            h = w = options.resize
        return (h, w, c)

    shapes = {final_shape(j.split) for j in jobs}
    if len(shapes) > 1:
        desc = ", ".join(f"{j.outputs[0].name} {'x'.join(map(str, final_shape(j.split)))}"
                         for j in jobs)
        raise DataPrepError(f"splits have different image shapes ({desc}); see --resize, "
                            "--grayscale")
    return shapes.pop()


def _labels(srcs, jobs, options: ConvertOptions, log):
    """(has_labels, label names or None). Labels are kept only when every split has them;
    class folders of several image sources are unified (their splits relabelled)."""
    has_labels = all(j.split.has_labels for j in jobs)
    if not has_labels and any(j.split.has_labels for j in jobs):
        log("note: some splits have no labels; writing none")
    names = options.label_names
    if names and not has_labels:
        raise DataPrepError("--label-names given, but the splits have no labels")
    folder_splits = [j.split for j in jobs if isinstance(j.split, ImageFilesSplit)
                     and j.split.has_labels]
    if has_labels and folder_splits and len(srcs) > 1:
        class_lists = [src.label_names for src in srcs if src.label_names]
        union = sorted(set().union(*class_lists))
        for src in srcs:
            for s in src.splits:
                if isinstance(s, ImageFilesSplit) and s.has_labels:
                    s.relabel(np.array([union.index(c) for c in src.label_names]))
        names = names or union
    elif has_labels and names is None:
        lists = [src.label_names for src in srcs if src.label_names]
        if lists and all(lst == lists[0] for lst in lists):
            names = lists[0]
    if not has_labels:
        names = None
    return has_labels, names


# ----------------------------------------------------------------------------- shards


def _default_shards(n, image_bytes, is_train, workers):
    by_size = math.ceil(n * (image_bytes + RECORD_OVERHEAD) / SHARD_TARGET_BYTES)
    return max(1, min(n, max(by_size, workers if is_train else 1)))


def _lay_out_shards(jobs, image_bytes, options: ConvertOptions):
    """Sets every output's number of shards (--shards, else by size and --workers)."""
    spec = options.shards
    for job in jobs:
        for o in job.outputs:
            n = len(o.indices)
            wanted = spec.get(o.name) if isinstance(spec, dict) else spec
            if wanted:
                o.num_shards = min(n, wanted)
            else:
                o.num_shards = _default_shards(n, image_bytes, o.name == "train",
                                               options.workers)
    if isinstance(spec, dict):
        unknown = set(spec) - {o.name for job in jobs for o in job.outputs}
        if unknown:
            raise DataPrepError(f"--shards names unknown split(s): {', '.join(sorted(unknown))}")
