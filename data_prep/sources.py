"""SOURCE forms of `data_prep convert`; each opens into named input splits.

Forms: `digits`, `tfds:NAME`, `npz:PATH`, `npy:IMAGES[,LABELS]`, `idx:IMAGES[,LABELS]`,
`amat:TRAIN,VALID,TEST` (or one file), `cifar10-bin:DIR`, `images:DIR`.

An input split gives uint8 images [n, H, W, C] (C = 1 or 3), optional int64 labels [n], its
number of levels (pixel values are < levels) and either random access by index (`read`) or
only a stream (`stream`, tfds). Nothing here unpickles anything.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import os
import socket
import zipfile
from collections.abc import Callable, Iterator

import numpy as np

from data_prep import imaging
from data_prep.errors import DataPrepError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_NAMES = {"train": "train", "valid": "validation", "validation": "validation",
               "val": "validation", "test": "test"}


@dataclasses.dataclass
class SourceOptions:
    key: str | None = None
    label_key: str | None = None
    split_keys: dict[str, str] | None = None
    split_label_keys: dict[str, str] | None = None
    image_shape: tuple[int, int, int] | None = None
    resize: int | None = None
    grayscale: bool = False
    tfds_data_dir: str | None = None


class InputSplit:
    """One split of one source. Subclasses give `read(indices)` or `stream(chunk)`."""

    random_access = True

    def __init__(self, name, num_examples, image_shape, levels, has_labels, where):
        self.name = name
        self.num_examples = int(num_examples)
        self.image_shape = tuple(image_shape)
        self.levels = int(levels)
        self.has_labels = bool(has_labels)
        self.where = where  # for messages
        self.limit = None

    def read(self, indices: np.ndarray):
        raise NotImplementedError

    def stream(self, chunk: int) -> Iterator:
        for start in range(0, self.num_examples, chunk):
            yield self.read(np.arange(start, min(start + chunk, self.num_examples)))


class ArraySplit(InputSplit):
    """Images from a numpy array (possibly memory-mapped), converted chunk by chunk."""

    def __init__(self, name, images, labels, where, notes, image_shape=None, levels=None,
                 check_chunk=8192):
        images = imaging.as_nhwc(images, where, image_shape, notes)
        n = images.shape[0]
        if n == 0:
            raise DataPrepError(f"{where}: no images")
        hi = 0
        for start in range(0, n, check_chunk):  # check every value once, in bounded memory
            part = imaging.to_uint8_pixels(np.asarray(images[start:start + check_chunk]), where)
            hi = max(hi, int(part.max()))
        if labels is not None:
            labels = imaging.to_labels(np.asarray(labels), n, f"{where} labels")
        if levels is None:
            levels = 2 if hi <= 1 else 256
        elif hi >= levels:
            raise DataPrepError(f"{where}: pixel value {hi} is not below {levels} levels")
        super().__init__(name, n, images.shape[1:], levels, labels is not None, where)
        self._images, self._labels = images, labels

    def read(self, indices):
        images = imaging.to_uint8_pixels(np.asarray(self._images[indices]), self.where)
        labels = self._labels[indices] if self._labels is not None else None
        return images, labels


class ImageFilesSplit(InputSplit):
    """PNG/JPEG files decoded with Pillow (threads: decoding releases the GIL)."""

    def __init__(self, name, files, labels, channels, size, where, resize):
        h, w = (resize, resize) if resize else size
        super().__init__(name, len(files), (h, w, channels), 256, labels is not None, where)
        self._files, self._labels, self._resize = files, labels, resize
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2)

    def _decode(self, path):
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = imaging.pil_to_array(im, self.image_shape[2], path)
            if self._resize:
                arr = imaging.resize_array(arr, self._resize)
        except DataPrepError:
            raise
        except Exception as e:  # PIL raises many types for bad files
            raise DataPrepError(f"{path}: cannot decode image ({e})") from None
        if arr.shape != self.image_shape:
            raise DataPrepError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, expected "
                                f"{self.image_shape[1]}x{self.image_shape[0]}")
        return arr

    def read(self, indices):
        arrays = list(self._pool.map(self._decode, [self._files[i] for i in indices]))
        images = np.stack(arrays) if arrays else np.zeros((0,) + self.image_shape, np.uint8)
        labels = self._labels[indices] if self._labels is not None else None
        return images, labels

    def relabel(self, mapping: np.ndarray):
        self._labels = mapping[self._labels]


class StreamSplit(InputSplit):
    """A split that can only be read front to back (tfds)."""

    random_access = False

    def __init__(self, name, num_examples, image_shape, levels, has_labels, where, make_iter):
        super().__init__(name, num_examples, image_shape, levels, has_labels, where)
        self._make_iter = make_iter

    def read(self, indices):
        raise TypeError("stream-only split")

    def stream(self, chunk):
        return self._make_iter(chunk)


@dataclasses.dataclass
class Source:
    spec: str
    description: str
    splits: list[InputSplit]
    dataset_name: str
    label_names: list[str] | None = None
    paths: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    # For sources that accept any split spec (tfds): name -> InputSplit, or None, and the
    # splits taken when --splits does not choose.
    select: Callable[[str], InputSplit] | None = None
    default_split_names: list[str] | None = None


# ----------------------------------------------------------------------------- helpers


def _exists(path: str) -> str:
    if not os.path.exists(path):
        raise DataPrepError(f"{path}: no such file or directory")
    return path


def _read_bytes(path: str) -> bytes:
    """Reads a file, gunzipping it when it starts with the gzip magic."""
    _exists(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise DataPrepError(f"{path}: cannot read ({e})") from None
    return data


def _stem(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    for suffix in (".gz", ".npz", ".npy", ".amat"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base or "dataset"


# ----------------------------------------------------------------------------- digits


def open_digits(arg: str, opts: SourceOptions) -> Source:
    if arg:
        raise DataPrepError(f"digits takes no argument, got 'digits:{arg}'")
    from sklearn.datasets import load_digits

    d = load_digits()
    notes: list[str] = []
    split = ArraySplit("train", d.images, d.target, "digits", notes, levels=17)
    return Source("digits", "scikit-learn load_digits (8x8, 17 levels)", [split], "digits",
                  [str(t) for t in d.target_names], notes=notes)


# ----------------------------------------------------------------------------- npz / npy


def _load_npz_array(z, key: str, path: str) -> np.ndarray:
    try:
        return z[key]
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataPrepError(f"{path}: array {key!r} holds Python objects; data_prep never "
                                "unpickles user data (save plain numeric arrays)") from None
        raise DataPrepError(f"{path}: cannot read array {key!r} ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataPrepError(f"{path}: cannot read array {key!r} ({e})") from None


def open_npz(arg: str, opts: SourceOptions) -> Source:
    path = _exists(arg)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataPrepError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataPrepError(f"{path}: is a .npy array, not an .npz archive; use npy:{path}")
    keys = list(z.files)
    have = ", ".join(keys) or "nothing"

    def need(key, what):
        if key not in keys:
            raise DataPrepError(f"{path}: no array {key!r} ({what}); the file has: {have}")
        return key

    if opts.split_keys and opts.key:
        raise DataPrepError("give either --key or --split-keys, not both")
    label_for: dict[str, str | None] = {}
    if opts.split_keys:
        split_keys = {out: need(k, "--split-keys") for out, k in opts.split_keys.items()}
    elif opts.key:
        split_keys = {"train": need(opts.key, "--key")}
    elif any(k in SPLIT_NAMES for k in keys):
        split_keys = {SPLIT_NAMES[k]: k for k in keys if k in SPLIT_NAMES}
    elif any(k.startswith("x_") for k in keys):  # keras.datasets layout
        split_keys = {SPLIT_NAMES.get(k[2:], k[2:]): k for k in keys if k.startswith("x_")}
        label_for = {out: ("y_" + k[2:]) if "y_" + k[2:] in keys else None
                     for out, k in split_keys.items()}
    elif "images" in keys:
        split_keys = {"train": "images"}
    elif len(keys) == 1:
        split_keys = {"train": keys[0]}
    else:
        raise DataPrepError(f"{path}: cannot tell which array holds the images (it has: "
                            f"{have}); pass --key K or --split-keys train=A,test=B")
    if opts.split_label_keys:
        for out in opts.split_label_keys:
            if out not in split_keys:
                raise DataPrepError(f"--split-label-keys names split {out!r}, which is not "
                                    f"among {', '.join(split_keys)}")
        label_for = {out: need(k, "--split-label-keys")
                     for out, k in opts.split_label_keys.items()}
    elif opts.label_key:
        if len(split_keys) != 1:
            raise DataPrepError("--label-key is for one image array; use --split-label-keys "
                                "train=A,test=B for several")
        label_for = {next(iter(split_keys)): need(opts.label_key, "--label-key")}
    elif not label_for:
        for out, k in split_keys.items():
            for cand in ("labels" if k == "images" else None, f"{k}_labels", f"{k}_label"):
                if cand and cand in keys:
                    label_for[out] = cand
                    break
    notes: list[str] = []
    splits = []
    for out, k in split_keys.items():
        images = _load_npz_array(z, k, path)
        lk = label_for.get(out)
        labels = _load_npz_array(z, lk, path) if lk else None
        splits.append(ArraySplit(out, images, labels, f"{path}[{k}]", notes, opts.image_shape))
    desc = f"npz:{os.path.abspath(path)} (" + ", ".join(
        f"{out}={k}" + (f"+{label_for[out]}" if label_for.get(out) else "")
        for out, k in split_keys.items()) + ")"
    return Source(f"npz:{arg}", desc, splits, _stem(path), paths=[path], notes=notes)


def _load_npy(path: str) -> np.ndarray:
    _exists(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if any(w in str(e) for w in ("allow_pickle", "Object arrays", "Python objects")):
            raise DataPrepError(f"{path}: holds Python objects; data_prep never unpickles "
                                "user data") from None
        raise DataPrepError(f"{path}: not a readable .npy file ({e})") from None
    except OSError as e:
        raise DataPrepError(f"{path}: not a readable .npy file ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise DataPrepError(f"{path}: is an .npz archive, not a .npy array; use npz:{path}")
    return arr


def open_npy(arg: str, opts: SourceOptions) -> Source:
    parts = arg.split(",")
    if len(parts) not in (1, 2) or not all(parts):
        raise DataPrepError(f"npy:{arg}: expected npy:IMAGES.npy[,LABELS.npy]")
    images = _load_npy(parts[0])
    labels = _load_npy(parts[1]) if len(parts) == 2 else None
    notes: list[str] = []
    split = ArraySplit("train", images, labels, parts[0], notes, opts.image_shape)
    return Source(f"npy:{arg}", "npy:" + ",".join(os.path.abspath(p) for p in parts), [split],
                  _stem(parts[0]), paths=parts, notes=notes)


# ----------------------------------------------------------------------------- IDX


def _read_idx(path: str, magic: int, what: str) -> np.ndarray:
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataPrepError(f"{path}: too short to be an IDX file")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DataPrepError(f"{path}: not an IDX {what} file (magic number {got}, expected "
                            f"{magic})")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != header + int(np.prod(dims)):
        raise DataPrepError(f"{path}: size {len(data)} bytes does not match its IDX header "
                            f"{dims} (truncated or trailing bytes)")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def open_idx(arg: str, opts: SourceOptions) -> Source:
    parts = arg.split(",")
    if len(parts) not in (1, 2) or not all(parts):
        raise DataPrepError(f"idx:{arg}: expected idx:IMAGES[,LABELS]")
    images = _read_idx(parts[0], 2051, "images")
    labels = _read_idx(parts[1], 2049, "labels") if len(parts) == 2 else None
    if labels is not None and labels.shape[0] != images.shape[0]:
        raise DataPrepError(f"{parts[1]}: {labels.shape[0]} labels for {images.shape[0]} images")
    notes: list[str] = []
    split = ArraySplit("train", images, labels, parts[0], notes, levels=256)
    name = "mnist" if "idx3" in os.path.basename(parts[0]) else _stem(parts[0])
    return Source(f"idx:{arg}", "idx:" + ",".join(os.path.abspath(p) for p in parts), [split],
                  name, paths=parts, notes=notes)


# ----------------------------------------------------------------------------- amat


def _parse_amat(path: str) -> np.ndarray:
    """Larochelle & Murray text format: one image per line, space-separated 0/1 values."""
    data = _read_bytes(path)
    buf = np.frombuffer(data, np.uint8)
    zero, one, nl = ord("0"), ord("1"), ord("\n")
    digit = (buf == zero) | (buf == one)
    space = (buf == ord(" ")) | (buf == ord("\t")) | (buf == ord("\r")) | (buf == nl)
    if digit.size and np.all(digit | space) and not np.any(digit[1:] & digit[:-1]):
        # Fast path: every token is a single '0' or '1'.
        ends = np.flatnonzero(buf == nl)
        if not ends.size or ends[-1] != buf.size - 1:
            ends = np.append(ends, buf.size - 1)
        per_line = np.diff(np.concatenate([[0], np.cumsum(digit)[ends]]))
        per_line = per_line[per_line > 0]  # blank lines
        if per_line.size == 0:
            raise DataPrepError(f"{path}: no images")
        if np.any(per_line != per_line[0]):
            bad = int(np.flatnonzero(per_line != per_line[0])[0])
            raise DataPrepError(f"{path}: line {bad + 1} has {per_line[bad]} values, the first "
                                f"has {per_line[0]}")
        return (buf[digit] - zero).reshape(per_line.size, int(per_line[0]))
    rows = []
    for i, line in enumerate(data.decode("ascii", errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            vals = np.array([float(t) for t in line.split()])
        except ValueError:
            raise DataPrepError(f"{path}: line {i + 1} is not numbers") from None
        if np.any((vals != 0) & (vals != 1)):
            raise DataPrepError(f"{path}: line {i + 1} has values other than 0 and 1")
        if rows and vals.size != rows[0].size:
            raise DataPrepError(f"{path}: line {i + 1} has {vals.size} values, the first has "
                                f"{rows[0].size}")
        rows.append(vals.astype(np.uint8))
    if not rows:
        raise DataPrepError(f"{path}: no images")
    return np.stack(rows)


def open_amat(arg: str, opts: SourceOptions) -> Source:
    parts = arg.split(",")
    if len(parts) not in (1, 3) or not all(parts):
        raise DataPrepError(f"amat:{arg}: expected amat:TRAIN,VALID,TEST (or one file)")
    names = ["train", "validation", "test"] if len(parts) == 3 else ["train"]
    notes: list[str] = []
    shape = opts.image_shape
    splits = []
    for name, p in zip(names, parts):
        rows = _parse_amat(p)
        if shape is None and rows.shape[1] == 784:
            shape = (28, 28, 1)
        splits.append(ArraySplit(name, rows, None, p, notes, shape, levels=2))
    return Source(f"amat:{arg}", "amat:" + ",".join(os.path.abspath(p) for p in parts), splits,
                  "binarized_mnist", paths=parts, notes=notes)


# ----------------------------------------------------------------------------- CIFAR-10 binary


def open_cifar10_bin(arg: str, opts: SourceOptions) -> Source:
    root = _exists(arg)
    if not os.path.isdir(root):
        raise DataPrepError(f"{root}: not a directory (cifar10-bin: wants the extracted "
                            "cifar-10-batches-bin folder)")
    if os.path.isdir(os.path.join(root, "cifar-10-batches-bin")):
        root = os.path.join(root, "cifar-10-batches-bin")
    listing = set(os.listdir(root))
    if {"data_batch_1", "test_batch", "batches.meta"} & listing:
        raise DataPrepError(f"{root}: this is the Python (pickle) version of CIFAR-10, which "
                            "data_prep never unpickles; download the binary version "
                            "(cifar-10-binary.tar.gz)")
    train_files = [f"data_batch_{i}.bin" for i in range(1, 6)]
    have_train = [f for f in train_files if f in listing]
    if have_train and len(have_train) != 5:
        missing = sorted(set(train_files) - set(have_train))
        raise DataPrepError(f"{root}: missing {', '.join(missing)}")
    groups = []
    if have_train:
        groups.append(("train", train_files))
    if "test_batch.bin" in listing:
        groups.append(("test", ["test_batch.bin"]))
    if not groups:
        raise DataPrepError(f"{root}: no data_batch_N.bin or test_batch.bin files")
    notes: list[str] = []
    splits = []
    for name, files in groups:
        records = []
        for f in files:
            path = os.path.join(root, f)
            size = os.path.getsize(path)
            if size == 0 or size % 3073:
                raise DataPrepError(f"{path}: {size} bytes is not a whole number of 3073-byte "
                                    "CIFAR-10 records")
            records.append(np.fromfile(path, np.uint8).reshape(-1, 3073))
        rec = np.concatenate(records)
        labels = rec[:, 0]
        if labels.max() > 9:
            raise DataPrepError(f"{root}: label {labels.max()} > 9; is this CIFAR-100?")
        images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        splits.append(ArraySplit(name, images, labels, os.path.join(root, files[0]), notes,
                                 levels=256))
    names = None
    meta = os.path.join(root, "batches.meta.txt")
    if os.path.exists(meta):
        with open(meta, encoding="utf-8", errors="replace") as f:
            names = [line.strip() for line in f if line.strip()] or None
    return Source(f"cifar10-bin:{arg}", f"cifar10-bin:{os.path.abspath(root)}", splits,
                  "cifar10", names, paths=[root], notes=notes)


# ----------------------------------------------------------------------------- image folders


def _list_images(root: str):
    """(files, class names or None, labels or None) for a folder, sub-folders as classes."""
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    top_files = [e for e in entries if e.lower().endswith(IMAGE_SUFFIXES)
                 and os.path.isfile(os.path.join(root, e))]
    classes = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    if top_files and classes:
        raise DataPrepError(f"{root}: has both image files and sub-folders; put every image "
                            "in a class sub-folder, or use a folder without sub-folders")
    if not classes:
        files = [os.path.join(root, e) for e in top_files]
        return files, None, None
    files, labels = [], []
    for label, cls in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, cls)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.lower().endswith(IMAGE_SUFFIXES) and not fn.startswith("."):
                    files.append(os.path.join(dirpath, fn))
                    labels.append(label)
    return files, classes, np.array(labels, np.int64)


def open_images(arg: str, opts: SourceOptions) -> Source:
    from PIL import Image

    root = _exists(arg)
    if not os.path.isdir(root):
        raise DataPrepError(f"{root}: not a directory")
    files, classes, labels = _list_images(root)
    if not files:
        raise DataPrepError(f"{root}: no .png/.jpg/.jpeg files")
    notes = []
    if classes and set(classes) <= set(SPLIT_NAMES) and len(classes) > 1:
        notes.append(f"class folders {classes} look like splits; for splits pass "
                     f"images:{root}/train images:{root}/test --splits train,test")
    sizes, grey = {}, True
    for path in files:  # headers only: fast, and finds unreadable files before writing
        try:
            with Image.open(path) as im:
                sizes.setdefault(im.size, path)
                grey = grey and im.mode in imaging.GREY_MODES
        except Exception as e:
            raise DataPrepError(f"{path}: cannot read image ({e})") from None
    if len(sizes) > 1 and not opts.resize:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise DataPrepError(f"{root}: images have different sizes ({p1} is {s1[0]}x{s1[1]}, "
                            f"{p2} is {s2[0]}x{s2[1]}); pass --resize N")
    channels = 1 if (opts.grayscale or grey) else 3
    (w, h) = next(iter(sizes))
    split = ImageFilesSplit("train", files, labels, channels, (h, w), root, opts.resize)
    desc = f"images:{os.path.abspath(root)} ({len(files)} files" + (
        f", {len(classes)} class folders)" if classes else ")")
    return Source(f"images:{arg}", desc, [split], _stem(root), classes, paths=[root],
                  notes=notes)


# ----------------------------------------------------------------------------- tfds

_TFDS_INSTEAD = {
    "mnist": "idx:train-images-idx3-ubyte.gz,train-labels-idx1-ubyte.gz or an npz: file",
    "fashion_mnist": "idx:train-images-idx3-ubyte.gz,train-labels-idx1-ubyte.gz",
    "binarized_mnist": "amat:binarized_mnist_train.amat,binarized_mnist_valid.amat,"
                       "binarized_mnist_test.amat or an npz: file",
    "cifar10": "cifar10-bin:DIR (the CIFAR-10 binary version) or an npz: file",
    "imagenet_resized": "images:DIR --resize 32 (or 64) on a folder of ImageNet images",
}


def _instead(name: str) -> str:
    return _TFDS_INSTEAD.get(name.split("/")[0].split(":")[0],
                             "a local source (images:DIR, npz:, npy:, idx:)")


def can_reach(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host opens (True when a proxy is configured)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                       "http_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from urllib.parse import urlparse

    u = urlparse(url)
    try:
        socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except (OSError, UnicodeError):
        return False


def _tfds_prepared(builder) -> bool:
    try:
        return bool(builder.is_prepared())
    except Exception:
        return os.path.exists(os.path.join(str(builder.data_path), "dataset_info.json"))


def open_tfds(arg: str, opts: SourceOptions) -> Source:
    if not arg:
        raise DataPrepError("tfds: needs a dataset name, e.g. tfds:mnist")
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # tfds warns about missing folders
    try:
        builder = tfds.builder(arg, data_dir=opts.tfds_data_dir)
        prepared = _tfds_prepared(builder)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataPrepError(f"tfds:{arg}: unknown to tensorflow-datasets ({first})") from None
    finally:
        absl_logging.set_verbosity(verbosity)
    if not prepared:
        urls = list(getattr(builder, "url_infos", None) or []) or [
            "https://storage.googleapis.com/tfds-data"]
        if not can_reach(urls[0]):
            raise DataPrepError(
                f"tfds:{arg}: not prepared in {builder.data_dir} and this machine cannot reach "
                f"its download host ({urls[0].split('/')[2]}); run `tfds build {arg}` where "
                f"there is internet and pass --tfds-data-dir, or use {_instead(arg)}")
        try:
            builder.download_and_prepare()
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise DataPrepError(f"tfds:{arg}: download/prepare failed ({type(e).__name__}: "
                                f"{first}); use {_instead(arg)}") from None
    feats = builder.info.features
    image_keys = [k for k, f in feats.items() if isinstance(f, tfds.features.Image)]
    if not image_keys:
        raise DataPrepError(f"tfds:{arg}: has no Image feature (features: {', '.join(feats)})")
    image_key = "image" if "image" in image_keys else image_keys[0]
    is_label = "label" in feats and isinstance(feats["label"], tfds.features.ClassLabel)
    label_key = "label" if is_label else None
    shape = feats[image_key].shape
    channels = shape[-1] or 3
    if channels not in (1, 3):
        raise DataPrepError(f"tfds:{arg}: images have {channels} channels; expected 1 or 3")
    fixed = shape[0] is not None and shape[1] is not None
    if not fixed and not opts.resize:
        raise DataPrepError(f"tfds:{arg}: images have varying sizes; pass --resize N")
    levels = 2 if arg.startswith("binarized_mnist") else 256
    label_names = list(feats[label_key].names) if label_key else None

    def select(spec: str) -> InputSplit:
        try:
            ds = builder.as_dataset(split=spec, shuffle_files=False)
        except Exception as e:
            raise DataPrepError(f"tfds:{arg}: cannot read split {spec!r} ({e})") from None
        n = int(ds.cardinality())
        if n < 0:
            n = builder.info.splits[spec].num_examples
        h, w = (opts.resize, opts.resize) if opts.resize else (shape[0], shape[1])

        def make_iter(chunk):
            import tensorflow as tf

            def pick(ex):
                return ex[image_key], (ex[label_key] if label_key else tf.constant(-1, tf.int64))

            items = ds.map(pick)
            if fixed and not opts.resize:
                for images, labels in tfds.as_numpy(items.batch(chunk)):
                    yield images, (labels.astype(np.int64) if label_key else None)
                return
            buf_i, buf_l = [], []
            for image, label in tfds.as_numpy(items):
                if opts.resize:
                    image = imaging.resize_array(image, opts.resize)
                buf_i.append(image)
                buf_l.append(label)
                if len(buf_i) == chunk:
                    yield np.stack(buf_i), (np.array(buf_l, np.int64) if label_key else None)
                    buf_i, buf_l = [], []
            if buf_i:
                yield np.stack(buf_i), (np.array(buf_l, np.int64) if label_key else None)

        return StreamSplit(spec, n, (h, w, channels), levels, label_key is not None,
                           f"tfds:{arg}[{spec}]", make_iter)

    # A builder that does not know its splits (tfds mocks) offers train and test.
    names = list(builder.info.splits.keys()) or ["train", "test"]
    return Source(f"tfds:{arg}", f"tfds:{arg} (version {builder.info.version})", [],
                  arg.replace("/", "_"), label_names, select=select, default_split_names=names)


OPENERS = {
    "digits": open_digits,
    "tfds": open_tfds,
    "npz": open_npz,
    "npy": open_npy,
    "idx": open_idx,
    "amat": open_amat,
    "cifar10-bin": open_cifar10_bin,
    "images": open_images,
}


def open_source(spec: str, opts: SourceOptions) -> Source:
    """Opens one SOURCE string (checks files and headers; reads small ones)."""
    kind, _, arg = spec.partition(":")
    if kind not in OPENERS:
        raise DataPrepError(f"unknown source {spec!r}; expected one of: digits, tfds:NAME, "
                            "npz:PATH, npy:PATH, idx:IMAGES[,LABELS], amat:TRAIN,VALID,TEST, "
                            "cifar10-bin:DIR, images:DIR")
    if kind != "digits" and not arg:
        raise DataPrepError(f"source {spec!r} needs a path or name after '{kind}:'")
    return OPENERS[kind](arg, opts)
