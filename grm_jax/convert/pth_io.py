"""Read and write PyTorch checkpoint files without importing torch.

PyTorch's ``torch.save`` (since 1.6) writes a ZIP archive (entries stored, not compressed)::

    <prefix>/data.pkl              pickle of the saved object; tensors appear as calls of
                                   torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                                   requires_grad, backward_hooks[, metadata])
    <prefix>/data/<key>            raw bytes of one storage (numel × itemsize bytes)
    <prefix>/byteorder             b"little" or b"big" (absent before torch 1.12: little-endian)
    <prefix>/version               serialization format version, e.g. b"3\\n"
    <prefix>/.format_version, <prefix>/.storage_alignment, <prefix>/.data/serialization_id (torch ≥ 2.x)

Each storage is referenced in ``data.pkl`` by a *persistent id*, the tuple
``("storage", <storage type global, e.g. torch.FloatStorage>, key, location, numel)``; ``numel`` counts
elements of the storage's dtype, not bytes. A tensor element ``t[i0, i1, ...]`` lives at element
``offset + Σ_k i_k·stride_k`` of its storage.

Safety model of :func:`load_pth`: ``data.pkl`` is read by a restricted :class:`pickle.Unpickler`
whose ``find_class`` resolves only this allow-list — nothing is ever imported:

* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor_v3`` / ``_rebuild_parameter`` /
  ``_rebuild_parameter_with_state`` → NumPy arrays (contiguous copies; Parameters become plain arrays),
* the storage types ``torch.{Double,Float,Half,BFloat16,Long,Int,Short,Char,Byte,Bool,ComplexFloat,
  ComplexDouble}Storage`` (and ``torch.UntypedStorage`` for ``_rebuild_tensor_v3``),
* the dtypes used by ``_rebuild_tensor_v3`` (``torch.float32``, ``torch.uint16``, …),
* ``collections.OrderedDict``, ``torch.Size`` (→ tuple), ``builtins.set`` / ``frozenset`` / ``complex``
  and ``_codecs.encode`` restricted to latin-1 (how pickle protocol 2 stores ``bytes``).

Any other global (``os.system``, but also harmless-looking classes such as a training ``Settings``
object or an ``AverageMeter`` in a GRM ``.pth.tar``) raises :class:`UnsafeCheckpointError` naming
``module.name`` and the file. With ``allow_skip=True`` such globals are instead replaced by
:class:`SkippedObject` placeholders that only *record* the class name and the arguments/state the
pickle gave them; no foreign code runs either way. Use ``allow_skip=True`` to read e.g. ``['net']``
of an official ``GRM_ep0300.pth.tar`` whose ``settings`` / ``stats`` entries are arbitrary objects.

The legacy (pre-1.6, non-zip) format is not supported: re-save such a file with a newer torch.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from grm_jax.errors import CheckpointError
from grm_jax.files import atomic_write_with

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "SkippedObject",
    "load_pth",
    "save_pth",
    "load_safetensors",
    "save_safetensors",
    "load_checkpoint_file",
]


# ----------------------------------------------------------------------------------------------------
# Errors


# CheckpointError (grm_jax.errors) is the base class of the errors raised while reading or writing checkpoint files;
# the Orbax checkpoints of grm_jax.checkpoints raise it too.


class CheckpointFormatError(CheckpointError, ValueError):
    """The file is not a readable checkpoint (not a zip, truncated, missing or short storage record…)."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (see the module docstring)."""


# ----------------------------------------------------------------------------------------------------
# dtype tables

# Legacy storage class name -> NumPy dtype (little-endian). Quantized storages are not supported.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "ComplexFloatStorage": np.dtype("<c8"),
    "ComplexDoubleStorage": np.dtype("<c16"),
}
# `torch.UntypedStorage` (bytes) is used with `_rebuild_tensor_v3`, which carries the real dtype.
_UNTYPED = "UntypedStorage"

# `torch.<name>` dtype globals accepted as the dtype argument of `_rebuild_tensor_v3`.
_TORCH_DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype("<f8"), "double": np.dtype("<f8"),
    "float32": np.dtype("<f4"), "float": np.dtype("<f4"),
    "float16": np.dtype("<f2"), "half": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype("<i8"), "long": np.dtype("<i8"),
    "int32": np.dtype("<i4"), "int": np.dtype("<i4"),
    "int16": np.dtype("<i2"), "short": np.dtype("<i2"),
    "int8": np.dtype("i1"), "uint8": np.dtype("u1"), "bool": np.dtype("?"),
    "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4"), "uint64": np.dtype("<u8"),
    "complex64": np.dtype("<c8"), "cfloat": np.dtype("<c8"),
    "complex128": np.dtype("<c16"), "cdouble": np.dtype("<c16"),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}

# NumPy dtype -> storage class written by save_pth (the types torch.load(weights_only=True) accepts).
_SAVE_STORAGE: dict[np.dtype, str] = {
    np.dtype("f8"): "DoubleStorage",
    np.dtype("f4"): "FloatStorage",
    np.dtype("f2"): "HalfStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype("i8"): "LongStorage",
    np.dtype("i4"): "IntStorage",
    np.dtype("i2"): "ShortStorage",
    np.dtype("i1"): "CharStorage",
    np.dtype("u1"): "ByteStorage",
    np.dtype("?"): "BoolStorage",
    np.dtype("c8"): "ComplexFloatStorage",
    np.dtype("c16"): "ComplexDoubleStorage",
}


# ----------------------------------------------------------------------------------------------------
# Objects the restricted unpickler hands to the pickle machine


class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class: only carries the element dtype (None = untyped)."""

    def __init__(self, name: str, dtype: np.dtype | None):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"torch.{self.name}"


class _TorchDType:
    """Stand-in for a ``torch.<dtype>`` object (argument of ``_rebuild_tensor_v3``)."""

    def __init__(self, name: str, dtype: np.dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """One loaded storage: its record key, flat element buffer ``data`` (1-D, read-only) and whether it is
    a ``torch.UntypedStorage`` (bytes; only valid with ``_rebuild_tensor_v3``, which names the dtype)."""

    def __init__(self, key: str, data: np.ndarray, untyped: bool):
        self.key, self.data, self.untyped = key, data, untyped


class SkippedObject:
    """Placeholder for an object whose class is not on the allow-list (``load_pth(..., allow_skip=True)``).

    Nothing of the original class is imported or run: the placeholder records the qualified name and
    whatever the pickle passed to it — constructor ``args``, ``state`` (``__setstate__``/BUILD), and
    ``items`` / ``list_items`` for dict- or list-like objects. Attribute values are themselves loaded with
    the same restrictions (tensors inside become NumPy arrays).
    """

    module: str = ""
    qualname: str = ""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        self.state = None
        self.items: dict = {}
        self.list_items: list = []

    def __new__(cls, *args, **kwargs):  # NEWOBJ calls cls.__new__(cls, *args) without __init__
        self = super().__new__(cls)
        self.args, self.kwargs, self.state, self.items, self.list_items = args, kwargs, None, {}, []
        return self

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.list_items.append(value)

    def extend(self, values):
        self.list_items.extend(values)

    @property
    def name(self) -> str:
        return f"{self.module}.{self.qualname}"

    def __repr__(self):
        return f"SkippedObject({self.name})"


def _skipped_class(module: str, name: str) -> type:
    """A fresh SkippedObject subclass standing for the global ``module.name``."""
    return type(f"Skipped[{module}.{name}]", (SkippedObject,), {"module": module, "qualname": name})


def _codecs_encode_latin1(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as used by pickle protocol 2 for ``bytes``: only the latin-1 codec is allowed."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise UnsafeCheckpointError(f"_codecs.encode called with unexpected arguments ({type(text).__name__}, "
                                    f"{encoding!r})")
    return text.encode("latin-1", errors)


# ----------------------------------------------------------------------------------------------------
# Tensor reconstruction

_MAX_EXPANSION_BYTES = 1 << 30  # see _strided_copy


def _strided_copy(storage: _Storage, offset: int, size, stride, dtype: np.dtype | None = None) -> np.ndarray:
    """Contiguous copy of the tensor ``t[i] = flat[offset + Σ_k i_k·stride_k]`` of a storage.

    ``dtype`` (for untyped storages) reinterprets the storage bytes; bounds are checked against the
    storage length before any strided view is formed.
    """
    flat = storage.data
    if dtype is not None:
        if flat.nbytes % dtype.itemsize:
            raise CheckpointFormatError(f"storage {storage.key}: {flat.nbytes} bytes is not a multiple of the "
                                        f"{dtype} item size")
        flat = flat.view(np.uint8).view(dtype)
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    offset = int(offset)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise CheckpointFormatError(f"storage {storage.key}: bad tensor geometry size={size} stride={stride} "
                                    f"offset={offset}")
    if 0 in size:
        return np.zeros(size, flat.dtype)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= flat.shape[0]:
        raise CheckpointFormatError(f"storage {storage.key}: tensor size={size} stride={stride} offset={offset} "
                                    f"needs element {last}, storage has {flat.shape[0]}")
    out_bytes = math.prod(size) * flat.dtype.itemsize
    if out_bytes > _MAX_EXPANSION_BYTES and out_bytes > 64 * max(flat.nbytes, 1):
        # stride-0 (expanded) tensors are materialised; refuse a tiny storage blown up to a huge array
        raise CheckpointFormatError(f"storage {storage.key}: tensor size={size} stride={stride} would expand a "
                                    f"{flat.nbytes}-byte storage to {out_bytes} bytes")
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                           strides=tuple(st * flat.dtype.itemsize for st in stride),
                                           writeable=False)
    return np.array(view, copy=True, order="C")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage):
        raise CheckpointFormatError(f"_rebuild_tensor_v2 got {type(storage).__name__} instead of a storage")
    if storage.untyped:
        raise CheckpointFormatError("_rebuild_tensor_v2 with an untyped storage")
    return _strided_copy(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    if not isinstance(storage, _Storage) or not isinstance(dtype, _TorchDType):
        raise CheckpointFormatError("_rebuild_tensor_v3 got unexpected arguments")
    return _strided_copy(storage, storage_offset, size, stride, dtype=dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """``nn.Parameter`` → its data (a NumPy array); gradient flags and hooks are dropped."""
    return data


def _torch_size(values=()):
    return tuple(values)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _torch_size,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _codecs_encode_latin1,
}
_ALLOWED.update({("torch", n): _StorageType(n, d) for n, d in _STORAGE_DTYPES.items()})
_ALLOWED[("torch", _UNTYPED)] = _ALLOWED[("torch.storage", _UNTYPED)] = _StorageType(_UNTYPED, None)
_ALLOWED.update({("torch", n): _TorchDType(n, d) for n, d in _TORCH_DTYPES.items()})


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for ``data.pkl``: allow-listed globals only; storages come from the zip records."""

    def __init__(self, file, *, path: str, zf: zipfile.ZipFile, prefix: str, big_endian: bool,
                 allow_skip: bool):
        super().__init__(file)
        self._path, self._zf, self._prefix = path, zf, prefix
        self._big_endian, self._allow_skip = big_endian, allow_skip
        self._storages: dict[str, _Storage] = {}
        self._names = set(zf.namelist())

    def find_class(self, module, name):
        module = _PY2_MODULES.get(module, module)  # protocol-2 pickles name builtins "__builtin__"
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if self._allow_skip:
            return _skipped_class(module, name)
        raise UnsafeCheckpointError(
            f"{self._path}: refusing to load global '{module}.{name}': it is not one of the tensor/container "
            f"constructors allowed by grm_jax.convert.pth_io (pass allow_skip=True to replace such objects by "
            f"SkippedObject placeholders, or use torch.load(weights_only=False) only on files you trust)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"{self._path}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"{self._path}: unsupported storage type {storage_type!r}")
        key = str(key)
        if key in self._storages:
            return self._storages[key]
        dtype = storage_type.dtype if storage_type.dtype is not None else np.dtype("u1")
        record = f"{self._prefix}/data/{key}"
        if record not in self._names:
            raise CheckpointFormatError(f"{self._path}: missing storage record '{record}'")
        try:
            raw = self._zf.read(record)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
            raise CheckpointFormatError(f"{self._path}: cannot read storage record '{record}': {exc}") from exc
        nbytes = int(numel) * dtype.itemsize
        if len(raw) < nbytes:
            raise CheckpointFormatError(f"{self._path}: storage record '{record}' holds {len(raw)} bytes, "
                                        f"{nbytes} needed ({numel} × {dtype})")
        file_dtype = dtype.newbyteorder(">") if self._big_endian and dtype.itemsize > 1 else dtype
        data = np.frombuffer(raw, dtype=file_dtype, count=int(numel))
        if file_dtype != dtype:
            data = data.astype(dtype)
        storage = _Storage(key, data, untyped=storage_type.dtype is None)
        self._storages[key] = storage
        return storage


# ----------------------------------------------------------------------------------------------------
# load_pth


def _legacy_hint(path: str, head: bytes) -> str:
    """Explain a non-zip file: pre-1.6 torch pickle / tar format, or just not a checkpoint."""
    if head[:2] == b"\x80\x02" or head[:1] == b"\x80":
        return (f"{path}: this is PyTorch's legacy (pre-1.6, non-zip) serialization format, which grm_jax does "
                f"not read; re-save it with torch >= 1.6, e.g. torch.save(torch.load(f, weights_only=True), g)")
    if head[257:262] == b"ustar":
        return (f"{path}: this is PyTorch's legacy tar serialization format, which grm_jax does not read; "
                f"re-save it with torch >= 1.6")
    return f"{path}: not a PyTorch zip checkpoint (no zip directory found: file truncated or corrupt?)"


def _archive_prefix(path: str, names: list[str]) -> str:
    """The single top-level folder holding ``data.pkl`` (torch names it after the file's stem)."""
    prefixes = sorted({n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1})
    if not prefixes:
        raise CheckpointFormatError(f"{path}: zip archive has no '<prefix>/data.pkl' record "
                                    f"(not a torch.save file)")
    if len(prefixes) > 1:
        raise CheckpointFormatError(f"{path}: zip archive has several data.pkl records: {prefixes}")
    return prefixes[0]


def load_pth(path: str | os.PathLike, *, allow_skip: bool = False) -> Any:
    """Read a ``torch.save`` zip checkpoint into NumPy arrays and plain Python containers, without torch.

    Tensors (and Parameters) become C-contiguous NumPy arrays of the same dtype and shape (0-d tensors are
    0-d arrays; bfloat16 → ``ml_dtypes.bfloat16``); dicts/OrderedDicts, lists, tuples, ints, floats, strings,
    bools and None are returned as such. Views sharing a storage become independent copies.

    Raises:
        CheckpointFormatError: not a zip / truncated / corrupt, missing or short storage record, legacy
            (pre-1.6) format.
        UnsafeCheckpointError: the pickle references a global that is not allow-listed (message names
            ``module.name`` and the file), unless ``allow_skip=True`` (see :class:`SkippedObject`).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise CheckpointFormatError(f"{path}: cannot open: {exc}") from exc
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise CheckpointFormatError(_legacy_hint(path, head)) from exc
    with zf:
        names = zf.namelist()
        prefix = _archive_prefix(path, names)
        big_endian = False
        if f"{prefix}/byteorder" in names:
            order = _read_record(zf, path, f"{prefix}/byteorder").strip()
            if order not in (b"little", b"big"):
                raise CheckpointFormatError(f"{path}: unknown byteorder record {order!r}")
            big_endian = order == b"big"
        pickled = _read_record(zf, path, f"{prefix}/data.pkl")
        unpickler = _RestrictedUnpickler(io.BytesIO(pickled), path=path, zf=zf, prefix=prefix,
                                         big_endian=big_endian, allow_skip=allow_skip)
        try:
            return unpickler.load()
        except CheckpointError as exc:
            if str(exc).startswith(path):
                raise
            raise type(exc)(f"{path}: {exc}") from exc  # name the file in errors raised by tensor rebuilds
        except Exception as exc:  # corrupt pickle stream: EOFError, UnpicklingError, TypeError, ...
            raise CheckpointFormatError(f"{path}: cannot unpickle {prefix}/data.pkl: "
                                        f"{type(exc).__name__}: {exc}") from exc


def _read_record(zf: zipfile.ZipFile, path: str, name: str) -> bytes:
    try:
        return zf.read(name)
    except KeyError as exc:
        raise CheckpointFormatError(f"{path}: missing record '{name}'") from exc
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise CheckpointFormatError(f"{path}: cannot read record '{name}': {exc}") from exc


# ----------------------------------------------------------------------------------------------------
# save_pth: a tiny protocol-2 pickle writer (no torch import, no pickling of live objects)


class _PickleWriter:
    """Emits pickle protocol 2 opcodes for plain containers and tensors (as torch's own files do).

    Tensors are written as ``torch._utils._rebuild_tensor_v2(persistent storage id, 0, shape,
    contiguous strides, False, OrderedDict())``; their bytes are collected in ``self.storages``.
    """

    def __init__(self):
        self.out = io.BytesIO()
        self.storages: list[np.ndarray] = []
        self._memo: dict[tuple[str, str], int] = {}

    def w(self, b: bytes):
        self.out.write(b)

    def global_(self, module: str, name: str):
        key = (module, name)
        if key in self._memo:
            self.w(b"j" + struct.pack("<I", self._memo[key]))  # LONG_BINGET
            return
        self.w(b"c" + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n")  # GLOBAL
        idx = len(self._memo)
        self._memo[key] = idx
        self.w(b"r" + struct.pack("<I", idx))  # LONG_BINPUT

    def str_(self, s: str):
        data = s.encode("utf-8", "surrogatepass")
        self.w(b"X" + struct.pack("<I", len(data)) + data)  # BINUNICODE

    def int_(self, v: int):
        if 0 <= v < 256:
            self.w(b"K" + bytes([v]))  # BININT1
        elif -(2**31) <= v < 2**31:
            self.w(b"J" + struct.pack("<i", v))  # BININT
        else:  # LONG1: little-endian two's complement
            nbytes = (v.bit_length() + 8) // 8
            self.w(b"\x8a" + bytes([nbytes]) + v.to_bytes(nbytes, "little", signed=True))

    def tuple_(self, items):
        if not items:
            self.w(b")")  # EMPTY_TUPLE
            return
        self.w(b"(")  # MARK
        for it in items:
            self.obj(it, where="tuple item")
        self.w(b"t")  # TUPLE

    def tensor(self, arr: np.ndarray):
        storage_name = _SAVE_STORAGE.get(arr.dtype.newbyteorder("="))
        if storage_name is None:
            raise TypeError(f"save_pth: dtype {arr.dtype} has no torch storage type "
                            f"(supported: {sorted(str(d) for d in _SAVE_STORAGE)})")
        key = str(len(self.storages))
        self.storages.append(arr)
        numel = int(arr.size)
        strides, acc = [], 1
        for n in reversed(arr.shape):  # torch's contiguous strides: stride_i = Π_{j>i} max(size_j, 1)
            strides.append(acc)
            acc *= max(int(n), 1)
        strides.reverse()
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.w(b"(")  # MARK (argument tuple)
        self.w(b"(")  # MARK (persistent id tuple)
        self.str_("storage")
        self.global_("torch", storage_name)
        self.str_(key)
        self.str_("cpu")
        self.int_(numel)
        self.w(b"t")
        self.w(b"Q")  # BINPERSID
        self.int_(0)  # storage offset
        self.tuple_([int(n) for n in arr.shape])
        self.tuple_(strides)
        self.w(b"\x89")  # NEWFALSE: requires_grad
        self.global_("collections", "OrderedDict")
        self.w(b")R")  # OrderedDict() : backward hooks
        self.w(b"t")  # TUPLE (arguments)
        self.w(b"R")  # REDUCE

    def obj(self, value, where: str = "value"):
        if value is None:
            self.w(b"N")
        elif value is True:
            self.w(b"\x88")
        elif value is False:
            self.w(b"\x89")
        elif isinstance(value, np.ndarray) or isinstance(value, np.generic):
            self.tensor(np.asarray(value))
        elif isinstance(value, int):
            self.int_(int(value))
        elif isinstance(value, float):
            self.w(b"G" + struct.pack(">d", value))  # BINFLOAT (big-endian)
        elif isinstance(value, str):
            self.str_(value)
        elif isinstance(value, Mapping):
            if isinstance(value, collections.OrderedDict):
                self.global_("collections", "OrderedDict")
                self.w(b")R")
            else:
                self.w(b"}")  # EMPTY_DICT
            if value:
                self.w(b"(")
                for k, v in value.items():
                    if not isinstance(k, (str, int)) or isinstance(k, bool):
                        raise TypeError(f"save_pth: dict key {k!r} must be str or int")
                    self.obj(k, where="dict key")
                    self.obj(v, where=f"entry {k!r}")
                self.w(b"u")  # SETITEMS
        elif isinstance(value, list):
            self.w(b"]")  # EMPTY_LIST
            if value:
                self.w(b"(")
                for it in value:
                    self.obj(it, where="list item")
                self.w(b"e")  # APPENDS
        elif isinstance(value, tuple):
            self.tuple_(list(value))
        elif hasattr(value, "__array__") and hasattr(value, "dtype") and hasattr(value, "shape"):
            self.tensor(np.asarray(value))  # e.g. jax.Array
        else:
            raise TypeError(f"save_pth: cannot save {where} of type {type(value).__name__} (only arrays, "
                            f"dict/list/tuple, int, float, str, bool, None)")

    def finish(self) -> bytes:
        self.w(b".")  # STOP
        return self.out.getvalue()


def _pickle_for_torch(obj) -> tuple[bytes, list[np.ndarray]]:
    writer = _PickleWriter()
    writer.w(b"\x80\x02")  # PROTO 2
    writer.obj(obj)
    return writer.finish(), writer.storages


_ALIGN = 64  # torch aligns storage data to 64 bytes (needed by torch.load(mmap=True))


def _write_aligned(zf: zipfile.ZipFile, name: str, payload) -> None:
    """Add a stored (uncompressed) record whose data starts at a multiple of ``_ALIGN`` in the file.

    The local header is 30 bytes + name + extra; the extra field is a padding block (id ``b"FB"``, the
    id torch's own writer uses) sized so that ``header_offset + 30 + len(name) + len(extra) ≡ 0 (mod 64)``.
    """
    payload = memoryview(payload).cast("B")
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header_offset = zf.fp.tell()
    name_len = len(name.encode("utf-8"))
    base = header_offset + 30 + name_len + 4  # + 4: the padding field's own header
    pad = (-base) % _ALIGN
    if len(payload) > zipfile.ZIP64_LIMIT:  # zipfile then adds a 20-byte zip64 extra in front of ours
        pad = (-(base + 20)) % _ALIGN
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    with zf.open(info, "w", force_zip64=len(payload) > zipfile.ZIP64_LIMIT) as dst:
        dst.write(payload)


def _archive_name(path: str) -> str:
    """Top-level folder name inside the zip: the file name up to its first dot (as torch does)."""
    stem = os.path.basename(path).split(".", 1)[0]
    ok = stem and all(c.isascii() and (c.isalnum() or c in "_-") for c in stem)
    return stem if ok else "archive"


def save_pth(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` in torch's zip format, atomically (temporary file + ``os.replace``).

    ``obj`` is a (nested) dict/OrderedDict/list/tuple of NumPy arrays (or anything with ``__array__``,
    e.g. ``jax.Array``; NumPy scalars become 0-d tensors) and ints, floats, strings, bools, None. Arrays of
    dtype float64/32/16, bfloat16, int64/32/16/8, uint8, bool, complex64/128 become CPU tensors with
    contiguous strides; ``torch.load(path, weights_only=True)`` reads the file and ``load_pth`` gives back
    the arrays bit-exactly. Other dtypes (e.g. uint16) raise ``TypeError``.
    """
    path = os.fspath(path)
    pickled, storages = _pickle_for_torch(obj)  # validate everything before touching the disk
    prefix = _archive_name(path)

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            _write_aligned(zf, f"{prefix}/data.pkl", pickled)
            _write_aligned(zf, f"{prefix}/.format_version", b"1")
            _write_aligned(zf, f"{prefix}/.storage_alignment", str(_ALIGN).encode())
            _write_aligned(zf, f"{prefix}/byteorder", b"little")
            for key, arr in enumerate(storages):
                data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
                _write_aligned(zf, f"{prefix}/data/{key}", data.reshape(-1).view(np.uint8))
            _write_aligned(zf, f"{prefix}/version", b"3\n")

    atomic_write_with(path, write)


# ----------------------------------------------------------------------------------------------------
# safetensors and dispatch


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``safetensors.numpy.load_file``; unreadable files raise :class:`CheckpointFormatError`."""
    from safetensors.numpy import load_file  # here: reading .pth files does not need safetensors installed

    path = os.fspath(path)
    try:
        return load_file(path)
    except Exception as exc:  # SafetensorError, OSError, ...
        raise CheckpointFormatError(f"{path}: cannot read safetensors file: {type(exc).__name__}: {exc}") from exc


def save_safetensors(tensors: Mapping[str, Any], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> None:
    """``safetensors.numpy.save_file`` of a **flat** ``{str: array}`` dict, written atomically.

    A nested value (dict, list, …) or a non-string key raises ``TypeError`` naming the key.
    """
    from safetensors.numpy import save_file  # here: see load_safetensors

    path = os.fspath(path)
    flat = {}
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise TypeError(f"save_safetensors: key {key!r} is not a string")
        if isinstance(value, (Mapping, list, tuple)) or not hasattr(value, "__array__"):
            raise TypeError(f"save_safetensors: entry {key!r} is a {type(value).__name__}, not an array "
                            f"(safetensors holds a flat dict of arrays; flatten nested keys first)")
        flat[key] = np.asarray(value, order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
    atomic_write_with(path, lambda tmp: save_file(flat, tmp, metadata=dict(metadata) if metadata else None))


_PTH_SUFFIXES = (".pth.tar", ".pth", ".pt", ".bin", ".ckpt")


def load_checkpoint_file(path: str | os.PathLike, *, allow_skip: bool = False) -> Any:
    """Load by extension: ``.pth``/``.pth.tar``/``.pt``/``.bin``/``.ckpt`` → :func:`load_pth`,
    ``.safetensors`` → :func:`load_safetensors`; any other extension raises ``ValueError``."""
    name = os.fspath(path).lower()
    if name.endswith(".safetensors"):
        return load_safetensors(path)
    if name.endswith(_PTH_SUFFIXES):
        return load_pth(path, allow_skip=allow_skip)
    raise ValueError(f"{os.fspath(path)}: unknown checkpoint extension (expected one of "
                     f"{', '.join(_PTH_SUFFIXES)}, .safetensors)")
