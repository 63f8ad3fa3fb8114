"""The input files of ``cecore eval``: .npy and .safetensors, memory-mapped.

A file is first *described* (:func:`describe`: its header read and checked,
nothing mapped), then each tensor is mapped read-only when it is evaluated
(:meth:`Tensor.map`), so many shards can be checked up front without holding
a mapping (and a file descriptor) for each.

The .safetensors reader follows the format's specification
(https://github.com/huggingface/safetensors#format): an 8-byte little-endian
header length N, N bytes of UTF-8 JSON ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}``, then the data
buffer, with offsets relative to its start. The tensors must cover the buffer
exactly, without overlaps or holes. BF16 tensors map to ``ml_dtypes.bfloat16``.
"""

import dataclasses
import glob
import json
import math
import mmap
import os
import re

import ml_dtypes
import numpy as np

NPY_MAGIC = b"\x93NUMPY"
# The reference implementation refuses larger headers.
MAX_HEADER_BYTES = 100_000_000



def _optional_dtype(name):
    return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else None


# Bits per element of every dtype the format defines, with its NumPy dtype (None:
# no NumPy equivalent, e.g. the packed 4- and 6-bit floats).
SAFETENSORS_DTYPES = {
    "BOOL": (8, np.dtype(np.bool_)),
    "U8": (8, np.dtype("u1")), "I8": (8, np.dtype("i1")),
    "U16": (16, np.dtype("<u2")), "I16": (16, np.dtype("<i2")),
    "U32": (32, np.dtype("<u4")), "I32": (32, np.dtype("<i4")),
    "U64": (64, np.dtype("<u8")), "I64": (64, np.dtype("<i8")),
    "F16": (16, np.dtype("<f2")), "BF16": (16, np.dtype(ml_dtypes.bfloat16)),
    "F32": (32, np.dtype("<f4")), "F64": (64, np.dtype("<f8")),
    "C64": (64, np.dtype("<c8")),
    "F8_E4M3": (8, np.dtype(ml_dtypes.float8_e4m3fn)),
    "F8_E5M2": (8, np.dtype(ml_dtypes.float8_e5m2)),
    "F8_E8M0": (8, _optional_dtype("float8_e8m0fnu")),  # ml_dtypes >= 0.5
    "F4": (4, None), "F6_E2M3": (6, None), "F6_E3M2": (6, None),
}


class CommandError(Exception):
    """A problem with the command's input, reported as one line on stderr."""


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One array in a file: where its bytes are, and how to read them."""

    path: str
    key: str | None  # the tensor's name in a .safetensors file; None for .npy
    dtype: np.dtype
    shape: tuple
    offset: int  # of the first byte, from the start of the file
    fortran_order: bool = False

    @property
    def nbytes(self):
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def name(self):
        """The path, with the key for a .safetensors file: ``run.safetensors[logits]``."""
        return self.path if self.key is None else f"{self.path}[{self.key}]"

    def map(self):
        """The array, a read-only view of a fresh mapping of the file (no copy)."""
        order = "F" if self.fortran_order else "C"
        if self.nbytes == 0:
            return np.empty(self.shape, self.dtype, order=order)
        start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
        try:
            with open(self.path, "rb") as f:
                mapping = mmap.mmap(f.fileno(), self.offset + self.nbytes - start,
                                    access=mmap.ACCESS_READ, offset=start)
        except (OSError, ValueError) as error:  # e.g. the file shrank since it was described
            raise CommandError(f"cannot map {self.name}: {_reason(error)}") from None
        # Transparent huge pages where the kernel allows them for files: a file read
        # through such a mapping is cached in 2 MB pages, which later runs map with one
        # page-table entry each instead of 512 (measured: mapping a cached 262 MB file
        # cost 10 ms of CPU per run with 4 kB entries, ~1 ms with 2 MB).
        if hasattr(mmap, "MADV_HUGEPAGE"):
            mapping.madvise(mmap.MADV_HUGEPAGE)
        return np.ndarray(self.shape, self.dtype, buffer=mapping, offset=self.offset - start,
                          order=order)


def _reason(error):
    return error.strerror if isinstance(error, OSError) and error.strerror else error


def is_safetensors_name(path):
    return os.fspath(path).endswith(".safetensors")


def describe(path, what, key=None, key_option="--key"):
    """The tensor that ``path`` (.npy, or .safetensors with ``key``) holds, checked.

    ``what`` (LOGITS, TARGETS) and ``key_option`` name the file and the option
    in messages. Raises CommandError for a file that cannot be read, is not one
    of the two formats, is corrupt or truncated, or has no such key.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as error:
        raise CommandError(f"cannot read {what} {path}: {_reason(error)}") from None
    if head.startswith(NPY_MAGIC):
        if key is not None:
            raise CommandError(f"{key_option} applies to .safetensors files; "
                               f"{what} {path} is a .npy file")
        return _describe_npy(path, what)
    if is_safetensors_name(path) or head[8:9] == b"{":
        tensors = read_safetensors_header(path, what)
        return select(tensors, key, what, path, key_option)
    if head.startswith(b"PK"):
        kind = "a .npz archive"
    elif path.endswith(".npy"):
        kind = "not a .npy file"
    else:
        kind = "neither a .npy nor a .safetensors file"
    raise CommandError(f"{what} {path} is {kind} (expected one array saved by numpy.save, "
                       "or a .safetensors file)")


def _describe_npy(path, what):
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot read {what} {path}: {_reason(error)}") from None
    # The mapping is dropped with ``array``; Tensor.map() maps the file again when needed.
    fortran = array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous
    return Tensor(path, None, array.dtype, array.shape, int(array.offset), bool(fortran))


def read_safetensors_header(path, what="file"):
    """``{name: Tensor}`` of a .safetensors file, after checking its whole header.

    Checks, as the format requires: the header length against the file, the
    header's JSON and the type of every field, that each dtype is one the
    format defines, that each tensor's byte range matches its dtype x shape and
    lies within the data buffer, and that the ranges neither overlap nor leave
    holes. Raises CommandError (one line) otherwise.
    """

    def bad(reason):
        return CommandError(f"{what} {path} is not a valid .safetensors file: {reason}")

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes, fewer than the 8 of the header length")
            n = int.from_bytes(head, "little")
            if n > size - 8:
                raise bad(f"the header length {n:,} is larger than the rest of the file "
                          f"({size - 8:,} bytes): truncated, or not a .safetensors file")
            if n > MAX_HEADER_BYTES:
                raise bad(f"the header length {n:,} exceeds the format's limit "
                          f"({MAX_HEADER_BYTES:,} bytes)")
            raw = f.read(n)
    except OSError as error:
        raise CommandError(f"cannot read {what} {path}: {_reason(error)}") from None
    if len(raw) < n:
        raise bad("the file shrank while it was read")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("the header is not UTF-8 text") from None
    if not text.startswith("{"):
        raise bad("the header does not start with '{' (it must be a JSON object)")

    def no_duplicates(pairs):
        names = [name for name, _ in pairs]
        if len(set(names)) < len(names):
            duplicate = next(name for name in names if names.count(name) > 1)
            raise bad(f"the header names {duplicate!r} twice")
        return dict(pairs)

    try:
        header = json.loads(text, object_pairs_hook=no_duplicates)
    except RecursionError:
        raise bad("the header's JSON is nested too deeply") from None
    except ValueError as error:
        if isinstance(error, json.JSONDecodeError):
            raise bad(f"the header is not valid JSON ({error.msg} at byte {error.pos})") from None
        raise bad(f"the header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ is not an object of strings")

    buffer_start, buffer_size = 8 + n, size - 8 - n
    tensors, ranges = {}, []
    for name, entry in header.items():
        where = f"tensor {name!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise bad(f"{where} is not an object with dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
            raise bad(f"{where} has unknown dtype {dtype!r} "
                      f"(the format defines {', '.join(SAFETENSORS_DTYPES)})")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise bad(f"{where} has shape {shape!r}, not a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1]):
            raise bad(f"{where} has data_offsets {offsets!r}, not [begin, end] "
                      "with 0 <= begin <= end")
        bits, np_dtype = SAFETENSORS_DTYPES[dtype]
        begin, end = offsets
        needed = math.prod(shape) * bits
        if needed % 8 or end - begin != needed // 8:
            raise bad(f"{where} has data_offsets [{begin}, {end}] ({end - begin:,} bytes), "
                      f"but {dtype} x shape {shape} takes {needed / 8:,g} bytes")
        if end > buffer_size:
            raise bad(f"{where} ends at byte {end:,} of the data, but the file holds "
                      f"{buffer_size:,} bytes of data: truncated, or bad data_offsets")
        ranges.append((begin, end, name))
        tensors[name] = (dtype, np_dtype, tuple(shape), buffer_start + begin)
    covered = 0
    previous = None
    for begin, end, name in sorted(ranges):
        if begin < covered:
            raise bad(f"tensors {previous!r} and {name!r} overlap in the data buffer")
        if begin > covered:
            raise bad(f"the data buffer has a hole at bytes [{covered:,}, {begin:,}) "
                      f"(before tensor {name!r})")
        covered, previous = end, name
    if covered < buffer_size:
        raise bad(f"{buffer_size - covered:,} bytes after the last tensor's data "
                  "(a hole at the end of the data buffer)")
    return {name: _TensorEntry(path, name, *fields) for name, fields in tensors.items()}


@dataclasses.dataclass(frozen=True)
class _TensorEntry:
    """A tensor of a .safetensors header, before it is chosen (its dtype may not map)."""

    path: str
    key: str
    format_dtype: str
    dtype: np.dtype | None
    shape: tuple
    offset: int

    def tensor(self, what):
        if self.dtype is None:
            raise CommandError(f"{what} {self.path}[{self.key}] has dtype {self.format_dtype}, "
                               "which NumPy cannot represent")
        return Tensor(self.path, self.key, self.dtype, self.shape, self.offset)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _names(keys, limit=12):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def select(tensors, key, what, path, key_option):
    """The tensor named ``key``, or the only one when ``key`` is None."""
    if key is None:
        if len(tensors) == 1:
            return next(iter(tensors.values())).tensor(what)
        if not tensors:
            raise CommandError(f"{what} {path} holds no tensors")
        raise CommandError(f"{what} {path} holds {len(tensors)} tensors ({_names(tensors)}): "
                           f"choose one with {key_option}")
    if key not in tensors:
        listed = _names(tensors) if tensors else "none"
        raise CommandError(f"{what} {path} has no tensor {key!r} ({key_option}); "
                           f"its tensors: {listed}")
    return tensors[key].tensor(what)


# ------------------------------------------------------------------ shards


def _natural_key(path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def expand(spec, option):
    """The files a --logits/--targets argument names: a directory (its .npy and
    .safetensors files) or a glob pattern (or one path), sorted by name with digit
    runs compared as numbers (shard_9 before shard_10)."""
    if os.path.isdir(spec):
        files = [os.path.join(spec, name) for name in os.listdir(spec)
                 if name.endswith((".npy", ".safetensors"))
                 and os.path.isfile(os.path.join(spec, name))]
        if not files:
            raise CommandError(f"{option} {spec}: the directory has no .npy or "
                               ".safetensors files")
    else:
        files = [p for p in glob.glob(spec, recursive=True) if not os.path.isdir(p)]
        if not files:
            raise CommandError(f"{option} {spec!r} matches no files")
    return sorted(files, key=_natural_key)
