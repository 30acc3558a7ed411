"""Reads PyTorch checkpoint files without PyTorch and without running code from them.

A pickle is a small program: every GLOBAL it names is looked up and may be called. This module never
lets the real lookup happen. Each file (and each nested pickle inside it) is first *scanned* opcode
by opcode; every global it names must be on an allow-list, otherwise :class:`UnsafeCheckpointError`
is raised before a single object is built. Only then is it unpickled, with every allowed global
replaced by a stand-in written here: tensor rebuild functions produce numpy arrays, NVIDIA's
persistent objects become plain :class:`PersistentObject` records (their embedded module source is
kept as text and never executed or imported), ``EasyDict`` becomes ``dict``, ``torch.nn`` modules
become :class:`TorchModule` records.

Formats handled:

* torch's zip format (``torch.save`` since 1.6): ``<prefix>/data.pkl`` whose persistent ids name
  storages stored raw in ``<prefix>/data/<key>``;
* torch's legacy format (``_use_new_zipfile_serialization=False``): magic number, protocol version
  and system-info pickles, the main pickle, the list of storage keys, then each storage as an int64
  element count followed by its bytes;
* plain pickles (NVlabs ``.pkl`` snapshots are ``pickle.dump`` of a dict of modules), in which each
  storage reduces through ``torch.storage._load_from_bytes`` wrapping a complete legacy
  ``torch.save`` byte string. Pickle protocols 2 to 5 are read; protocol 2 (any file re-saved with
  ``protocol=2``) writes those byte strings as ``_codecs.encode(text, 'latin1')``, the one use of
  ``_codecs.encode`` the allow-list accepts.

Public API: :func:`read_torch_file`, :func:`read_state_dict`, :func:`unpickle_restricted`.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import pickletools
import struct
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

from regfac_jax.errors import UserError

__all__ = [
    "CheckpointFormatError",
    "PersistentObject",
    "TorchModule",
    "UnsafeCheckpointError",
    "read_state_dict",
    "read_torch_file",
    "unpickle_restricted",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_LEGACY_CONVERTER = (
    "https://github.com/NVlabs/stylegan2-ada-pytorch/blob/main/legacy.py "
    "(python legacy.py --source=OLD.pkl --dest=NEW.pkl)"
)


class UnsafeCheckpointError(UserError, ValueError):
    """The file asks the unpickler to run something that no checkpoint needs; nothing was
    executed."""


class CheckpointFormatError(UserError, ValueError):
    """The file is not a checkpoint this package can read (wrong format, truncated, unsupported)."""


# ---- records that replace the objects a checkpoint would normally rebuild ------------------------


@dataclasses.dataclass
class PersistentObject:
    """An NVlabs ``torch_utils.persistence`` object, as data.

    Attributes:
      class_name: the class name stored in the pickle (e.g. 'Generator').
      module_name: the official module it comes from, guessed from the embedded source text (e.g.
        'training.networks'), or None when unrecognised. The source is never executed.
      init_args: positional constructor arguments (a tuple, normally empty).
      init_kwargs: constructor keyword arguments (nested dicts).
      state: the object's ``__dict__`` (for modules: ``_parameters``, ``_buffers``, ``_modules``,
        ...).
      module_src: the embedded module source, as text.
    """

    class_name: str
    module_name: str | None
    init_args: tuple
    init_kwargs: dict
    state: dict
    module_src: str = dataclasses.field(repr=False, default="")

    @property
    def qualified_name(self) -> str:
        return f"{self.module_name or '<unknown module>'}.{self.class_name}"


class TorchModule:
    """A ``torch.nn`` module (ModuleList, Sequential, ...) rebuilt as data: its class path and
    ``__dict__``."""

    class_path: str = "torch.nn.Module"

    # pickle's NEWOBJ may pass constructor args; they are ignored
    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state):
        self.state = dict(state) if isinstance(state, Mapping) else {"state": state}

    def __repr__(self) -> str:
        return f"TorchModule({self.class_path})"


_MODULE_CLASSES: dict[str, type] = {}


def _torch_module_class(path: str) -> type:
    if path not in _MODULE_CLASSES:
        _MODULE_CLASSES[path] = type(path.rsplit(".", 1)[-1], (TorchModule,), {"class_path": path})
    return _MODULE_CLASSES[path]


@dataclasses.dataclass(frozen=True)
class _DType:
    """A torch dtype / storage class, reduced to the numpy dtype its bytes decode as."""

    name: str
    np_name: str

    def numpy(self, big_endian: bool = False) -> np.dtype:
        if self.np_name == "bfloat16":
            import ml_dtypes  # installed with jax; numpy has no bfloat16

            dt = np.dtype(ml_dtypes.bfloat16)
        else:
            dt = np.dtype(self.np_name)
        return dt.newbyteorder(">") if big_endian and dt.itemsize > 1 else dt


_TORCH_DTYPES = {
    "float32": "f4",
    "float": "f4",
    "float64": "f8",
    "double": "f8",
    "float16": "f2",
    "half": "f2",
    "bfloat16": "bfloat16",
    "int64": "i8",
    "long": "i8",
    "int32": "i4",
    "int": "i4",
    "int16": "i2",
    "short": "i2",
    "int8": "i1",
    "uint8": "u1",
    "bool": "?",
    "complex64": "c8",
    "complex128": "c16",
}
_STORAGE_TYPES = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",
}


class _Storage:
    """A flat storage: one writable numpy vector that every tensor built on it views (so sharing
    holds)."""

    def __init__(self, dtype: _DType, data: np.ndarray):
        self.dtype = dtype
        self.data = data


class _TensorTypeMarker:
    """Stands for torch.Tensor / torch.nn.Parameter where a pickle passes the class as an
    argument."""


class _ParameterMarker(_TensorTypeMarker):
    pass


class _NDArrayType:
    """Stands for the class numpy.ndarray, which pickles pass to ``_reconstruct``; it builds
    nothing."""


# ---- stand-ins for the allowed globals -----------------------------------------------------------


def _check_ints(name: str, values) -> tuple:
    if not isinstance(values, (tuple, list)) or not all(
        isinstance(v, int) and v >= 0 for v in values
    ):
        raise CheckpointFormatError(
            f"tensor {name} must be a tuple of non-negative ints, got {values!r}."
        )
    return tuple(values)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> np.ndarray:
    """The array ``storage[offset + sum(i_k * stride_k)]`` of shape ``size``, a view sharing the
    storage."""
    if not isinstance(storage, _Storage):
        raise CheckpointFormatError(
            f"a tensor was rebuilt from {type(storage).__name__}, not from a storage."
        )
    size, stride = _check_ints("size", size), _check_ints("stride", stride)
    if len(size) != len(stride) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointFormatError(
            f"inconsistent tensor layout: size {size}, stride {stride}, offset {storage_offset!r}."
        )
    numel = storage.data.size
    if 0 in size:
        return np.zeros(size, storage.data.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= numel:  # a malformed file must never make us read past the storage
        raise CheckpointFormatError(
            f"tensor of size {size}, stride {stride}, offset {storage_offset} reaches "
            f"element {last} of a storage holding only {numel}."
        )
    item = storage.data.itemsize
    return np.lib.stride_tricks.as_strided(
        storage.data[storage_offset:], shape=size, strides=tuple(s * item for s in stride)
    )


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype, *unused):
    arr = _rebuild_tensor(storage, storage_offset, size, stride)
    if isinstance(dtype, _DType) and arr.dtype != dtype.numpy(arr.dtype.byteorder == ">"):
        raise CheckpointFormatError(
            f"tensor dtype {dtype.name} does not match its storage ({arr.dtype})."
        )
    return arr


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, np.ndarray):
        raise CheckpointFormatError(f"a Parameter wraps {type(data).__name__}, not a tensor.")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (
        _rebuild_tensor,
        _rebuild_tensor_v2,
        _rebuild_tensor_v3,
        _rebuild_parameter,
        _rebuild_from_numpy,
    ) or not (isinstance(new_type, type) and issubclass(new_type, _TensorTypeMarker)):
        raise UnsafeCheckpointError(
            "torch._tensor._rebuild_from_type_v2 called with a function or type that is "
            "not a tensor rebuild; refused."
        )
    return func(*args)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_from_numpy(data, dtype, device, requires_grad):
    if not isinstance(data, np.ndarray):
        raise CheckpointFormatError(
            "torch._utils._rebuild_device_tensor_from_numpy needs an array."
        )
    return data


def _reconstruct_persistent_obj(meta) -> PersistentObject:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: records, never
    imports."""
    if (
        not isinstance(meta, Mapping)
        or meta.get("type") != "class"
        or not isinstance(meta.get("state"), Mapping)
    ):
        raise CheckpointFormatError(
            "malformed NVlabs persistent object (expected meta with type 'class' and a state dict)."
        )
    state = dict(meta["state"])
    src = meta.get("module_src", "")
    src = src if isinstance(src, str) else ""
    kwargs = state.get("_init_kwargs", {})
    args = state.get("_init_args", ())
    return PersistentObject(
        class_name=str(meta.get("class_name")),
        module_name=_guess_module(src),
        init_args=tuple(args) if isinstance(args, (tuple, list)) else (),
        init_kwargs=dict(kwargs) if isinstance(kwargs, Mapping) else {},
        state=state,
        module_src=src,
    )


def _guess_module(src: str) -> str | None:
    """Names the official module whose source this is, by its text (it is never executed)."""
    if "class SynthesisInput" in src and "filtered_lrelu" in src:
        return "training.networks_stylegan3"
    if "class SynthesisBlock" in src:
        if "Analyzing and Improving the Image Quality of StyleGAN" in src:
            # NVlabs/stylegan3's copy of the StyleGAN2 networks
            return "training.networks_stylegan2"
        return "training.networks"  # NVlabs/stylegan2-ada-pytorch
    if "class AugmentPipe" in src:
        return "training.augment"
    return None


def _torch_device(*args):
    return "device(" + ", ".join(map(str, args)) + ")"


class _NumpyDType:
    """Stand-in for ``numpy.dtype`` reconstruction: a plain dtype code plus the byte order BUILD
    sets."""

    _ALLOWED = (
        set("?bBhHiIlLqQefdgFDG")
        | {f"{k}{n}" for k in "iuf" for n in (1, 2, 4, 8)}
        | {"c8", "c16", "b1"}
    )

    def __init__(self, code, align=False, copy=True):
        if not isinstance(code, str) or code not in self._ALLOWED:
            raise UnsafeCheckpointError(
                f"numpy dtype {code!r} is not a plain numeric dtype; object, structured "
                "and void arrays are refused (they can carry pickled code)."
            )
        self.code = code
        self.byteorder = "="

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]

    def numpy(self) -> np.dtype:
        dt = np.dtype(self.code)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


class _NumpyArray:
    """Stand-in for ``numpy.core.multiarray._reconstruct``; BUILD fills it, :func:`_finalize` swaps
    it."""

    def __init__(self, *unused):
        self.array: np.ndarray | None = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise CheckpointFormatError("malformed pickled numpy array.")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _NumpyDType) or not isinstance(raw, (bytes, bytearray)):
            raise UnsafeCheckpointError(
                "pickled numpy array without a plain dtype and raw bytes (object arrays "
                "are refused)."
            )
        shape = _check_ints("shape", shape)
        arr = np.frombuffer(bytearray(raw), dtype=dtype.numpy())
        if arr.size != int(np.prod(shape)):
            raise CheckpointFormatError(f"numpy array of shape {shape} holds {arr.size} values.")
        self.array = arr.reshape(shape, order="F" if fortran else "C")


def _numpy_scalar(dtype, raw=None):
    if not isinstance(dtype, _NumpyDType) or not isinstance(raw, (bytes, bytearray)):
        raise UnsafeCheckpointError("numpy scalar without a plain dtype and raw bytes; refused.")
    return np.frombuffer(bytes(raw), dtype=dtype.numpy())[0]


def _numpy_frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, _NumpyDType):
        raise UnsafeCheckpointError("numpy _frombuffer with a non-numeric dtype; refused.")
    arr = np.frombuffer(bytearray(bytes(buf)), dtype=dtype.numpy())
    return arr.reshape(_check_ints("shape", shape), order=order if order in ("C", "F") else "C")


def _latin1_bytes(*args) -> bytes:
    """Stand-in for ``_codecs.encode``, allowed for one construction only:
    ``encode(<str>, 'latin1')``.

    Pickle protocols 0-2 have no bytes opcode, so Python writes every ``bytes`` object (in NVlabs
    pickles: each tensor storage's embedded ``torch.save`` byte string) as
    ``_codecs.encode(text, 'latin1')``, where ``text`` holds one character per byte. Any other
    encoding, argument type or argument count is refused: other codecs (e.g. 'zlib', 'base64',
    'rot13') are not how pickle stores bytes, and nothing else needs this global.
    """
    if (
        len(args) != 2
        or type(args[0]) is not str
        or type(args[1]) is not str
        or args[1] != "latin1"
    ):
        shown = ", ".join(
            repr(a[:20]) if type(a) is str and i else type(a).__name__ for i, a in enumerate(args)
        )
        raise UnsafeCheckpointError(
            f"refusing to load: the pickle calls _codecs.encode({shown}); only encode(<str>, "
            "'latin1'), the way "
            "pickle protocol 2 stores bytes, is allowed. Nothing from the file was run."
        )
    try:
        return args[0].encode("latin1")
    except UnicodeEncodeError:
        raise CheckpointFormatError(
            "malformed protocol-2 bytes: _codecs.encode(text, 'latin1') with a character "
            "above U+00FF (not one byte per character)."
        ) from None


# ---- the allow-list ------------------------------------------------------------------------------


def _allowed_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._utils", "_rebuild_device_tensor_from_numpy"): _rebuild_from_numpy,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch.storage", "_load_from_bytes"): _load_from_bytes,
        ("torch", "Tensor"): _TensorTypeMarker,
        ("torch._tensor", "Tensor"): _TensorTypeMarker,
        ("torch.nn.parameter", "Parameter"): _ParameterMarker,
        ("torch", "device"): _torch_device,
        ("torch", "Size"): tuple,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): dict,
        ("dnnlib", "EasyDict"): dict,
        # protocol-2 bytes; the stand-in accepts only (str, 'latin1')
        ("_codecs", "encode"): _latin1_bytes,
    }
    for name, code in _TORCH_DTYPES.items():
        table[("torch", name)] = _DType(name, code)
    for name, code in _STORAGE_TYPES.items():
        table[("torch", name)] = _DType(name, code)
        table[("torch.storage", name)] = _DType(name, code)
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = _NumpyArray
        table[(f"{core}.multiarray", "scalar")] = _numpy_scalar
        table[(f"{core}.numeric", "_frombuffer")] = _numpy_frombuffer
    # only ever an argument of _reconstruct, which ignores it
    table[("numpy", "ndarray")] = _NDArrayType
    table[("numpy", "dtype")] = _NumpyDType
    return table


_TF_MODULES = ("dnnlib.tflib", "tensorflow")


def _resolve_global(module: str, name: str) -> Any:
    """The stand-in for global ``module.name``; raises :class:`UnsafeCheckpointError` for anything
    else."""
    module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
    key = (module, name)
    if key in _ALLOWED:
        return _ALLOWED[key]
    if module.startswith("torch.nn.modules.") and name[:1].isupper() and name.isidentifier():
        return _torch_module_class(f"{module}.{name}")
    if module.startswith(_TF_MODULES):
        raise CheckpointFormatError(
            f"this is a TensorFlow network pickle (it refers to {module}.{name}); TensorFlow "
            "checkpoints are not "
            "supported. Convert it to the PyTorch format first with the official converter "
            f"{_LEGACY_CONVERTER}, then load the converted .pkl."
        )
    raise UnsafeCheckpointError(
        f"refusing to load: the pickle refers to the global {module}.{name}, which is not on the "
        "allow-list of "
        "tensor, container and NVlabs-record types. Loading it with plain pickle/torch.load could "
        "execute "
        "arbitrary code; nothing from the file was run. If this is a genuine checkpoint of another "
        "kind, save its state_dict with torch.save and load that instead."
    )


# ---- static scan: every global is checked before anything is unpickled ---------------------------

_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MARK = object()
_UNKNOWN = object()


def scan_pickle(stream: io.BytesIO, what: str = "pickle") -> list[tuple[str, str]]:
    """Reads one pickle from ``stream`` without executing it; returns the globals it names.

    Every global (GLOBAL, and STACK_GLOBAL whose operands are traced through the stack and memo) is
    checked against the allow-list; INST and OBJ opcodes are refused outright.

    Raises:
      UnsafeCheckpointError: a global outside the allow-list, INST/OBJ, or a STACK_GLOBAL whose
        names cannot be traced.
      CheckpointFormatError: the data is not a complete pickle (truncated file, not a pickle at
        all).
    """
    names: list[tuple[str, str]] = []
    stack: list = []
    memo: dict = {}
    try:
        for op, arg, _pos in pickletools.genops(stream):
            _scan_one(op, arg, stack, memo, names)
    except (ValueError, EOFError, struct.error, IndexError) as err:
        if isinstance(err, (UnsafeCheckpointError, CheckpointFormatError)):
            raise
        raise CheckpointFormatError(
            f"{what} is not a complete pickle ({err}); the file is truncated or is not a "
            "PyTorch/NVlabs checkpoint (an interrupted download?)."
        ) from None
    return names


def _scan_one(op, arg, stack: list, memo: dict, names: list) -> None:
    """Checks one opcode and replays its effect on the traced ``stack`` and ``memo``."""
    name = op.name
    if name in ("INST", "OBJ"):
        raise UnsafeCheckpointError(
            f"refusing to load: the pickle uses the {name} opcode (class instantiation "
            "by the unpickler), which no PyTorch checkpoint uses; nothing was run."
        )
    if name in ("GLOBAL", "STACK_GLOBAL"):
        names.append(_checked_global(name, arg, stack))
    if name in _PUT_OPS:
        memo[arg] = stack[-1] if stack else _UNKNOWN
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1] if stack else _UNKNOWN
    else:
        _pop_operands(op.stack_before, stack)
        # one at a time: DUP copies the top as it is after the previous push
        for item in op.stack_after:
            stack.append(_pushed_value(item, name, arg, stack, memo))


def _checked_global(name: str, arg, stack: list) -> tuple[str, str]:
    """(module, qualified name) of a GLOBAL or STACK_GLOBAL opcode, once the allow-list accepts
    it."""
    if name == "GLOBAL":
        module, qual = arg.split(" ", 1)
    else:
        module, qual = (stack[-2], stack[-1]) if len(stack) >= 2 else (_UNKNOWN, _UNKNOWN)
        if not (isinstance(module, str) and isinstance(qual, str)):
            raise UnsafeCheckpointError(
                "refusing to load: STACK_GLOBAL with names computed at load time cannot "
                "be checked; nothing was run."
            )
    _resolve_global(module, qual)
    return module, qual


def _pop_operands(before: list, stack: list) -> None:
    """Removes what an opcode consumes: everything down to (and including) its mark, then its fixed
    operands."""
    if pickletools.markobject not in before:
        del stack[max(0, len(stack) - len(before)) :]
        return
    while stack and stack[-1] is not _MARK:
        stack.pop()
    if stack:
        stack.pop()
    del stack[max(0, len(stack) - before.index(pickletools.markobject)) :]


def _pushed_value(item, name: str, arg, stack: list, memo: dict):
    """What the scan knows about one value an opcode pushes: a mark, a string, a memo entry, or
    nothing."""
    if item is pickletools.markobject:
        return _MARK
    if name in _STRING_OPS:
        return arg if isinstance(arg, str) else _UNKNOWN
    if name in _GET_OPS:
        return memo.get(arg, _UNKNOWN)
    if name == "DUP":
        return stack[-1] if stack else _UNKNOWN
    return _UNKNOWN


# ---- the restricted unpickler --------------------------------------------------------------------


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream, persistent: Callable[[Any], Any] | None):
        super().__init__(stream, fix_imports=True, encoding="latin1")
        self._persistent = persistent

    def find_class(self, module, name):  # noqa: D401 -- pickle's hook
        return _resolve_global(module, name)

    def persistent_load(self, pid):
        if self._persistent is None:
            raise CheckpointFormatError("unexpected persistent id in a plain pickle.")
        return self._persistent(pid)


def unpickle_restricted(
    data: bytes | io.BytesIO, persistent: Callable[[Any], Any] | None = None, what: str = "pickle"
) -> Any:
    """Scans then unpickles one pickle with the stand-ins; ``data`` is bytes or a positioned
    stream."""
    stream = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    start = stream.tell()
    scan_pickle(stream, what)
    end = stream.tell()
    stream.seek(start)
    obj = _RestrictedUnpickler(stream, persistent).load()
    stream.seek(end)
    return obj


def _storage_pid(pid) -> tuple[_DType, str, int, tuple | None]:
    """Validates a ('storage', type, key, location, numel[, view]) persistent id."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")):
        raise CheckpointFormatError(
            f"unsupported persistent id {str(pid)[:80]!r} (only tensor storages are)."
        )
    dtype, key, numel = pid[1], pid[2], pid[4]
    if (
        not isinstance(dtype, _DType)
        or not isinstance(key, (str, bytes))
        or not isinstance(numel, int)
    ):
        raise UnsafeCheckpointError(f"malformed storage persistent id {str(pid)[:80]!r}; refused.")
    view = pid[5] if len(pid) == 6 else None
    return dtype, key.decode() if isinstance(key, bytes) else key, numel, view


# ---- torch file formats --------------------------------------------------------------------------


def _zip_pickle_name(names: list[str], path: str) -> str:
    """The archive's ``<folder>/data.pkl``; refuses TorchScript and other zip files."""
    pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkls:
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise CheckpointFormatError(
                f"{path} is a TorchScript archive (torch.jit.save); save the model's "
                "state_dict with torch.save instead."
            )
        raise CheckpointFormatError(
            f"{path} is a zip archive without data.pkl: not a torch.save file."
        )
    return pkls[0]


def _read_zip(zf: zipfile.ZipFile, path: str) -> Any:
    names = zf.namelist()
    pkl = _zip_pickle_name(names, path)
    prefix = pkl[: -len("data.pkl")]
    big = prefix + "byteorder" in names and zf.read(prefix + "byteorder").strip() == b"big"
    storages: dict[str, _Storage] = {}

    def persistent(pid):
        dtype, key, numel, _ = _storage_pid(pid)
        if key not in storages:
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise CheckpointFormatError(
                    f"{path}: storage {entry} is missing (truncated archive?)."
                )
            raw = zf.read(entry)
            dt = dtype.numpy(big)
            if len(raw) < numel * dt.itemsize:
                raise CheckpointFormatError(
                    f"{path}: storage {key} holds {len(raw)} bytes, needs {numel * dt.itemsize}."
                )
            storages[key] = _Storage(
                dtype, np.frombuffer(bytearray(raw[: numel * dt.itemsize]), dt)
            )
        return storages[key]

    return unpickle_restricted(zf.read(pkl), persistent, what=f"{path}:data.pkl")


def _read_legacy(stream: io.BytesIO, what: str) -> Any:
    """torch's pre-1.6 format; ``stream`` is positioned after the magic number.

    As in torch, each storage is allocated when the pickle first names it (its element count is in
    the persistent id), tensors are built as views of it, and its bytes, which follow the pickle,
    are copied in afterwards, so every view sees them.
    """
    if unpickle_restricted(stream, what=what) != LEGACY_PROTOCOL:
        raise CheckpointFormatError(f"{what}: unsupported legacy torch protocol version.")
    sys_info = unpickle_restricted(stream, what=what)
    big = isinstance(sys_info, Mapping) and sys_info.get("little_endian") is False
    roots: dict[str, _Storage] = {}
    views: dict[str, _Storage] = {}

    def persistent(pid):
        if isinstance(pid, tuple) and pid and pid[0] in ("module", b"module"):
            return pid[1]  # a whole-module save: the class (already vetted by the allow-list)
        dtype, key, numel, view = _storage_pid(pid)
        if key not in roots:
            roots[key] = _Storage(dtype, np.zeros((numel,), dtype.numpy(big)))
        if view is None:
            return roots[key]
        view_key, offset, size = view
        if view_key not in views:
            views[view_key] = _Storage(dtype, roots[key].data[offset : offset + size])
        return views[view_key]

    result = unpickle_restricted(stream, persistent, what=what)
    _fill_legacy_storages(stream, roots, what)
    return result


def _fill_legacy_storages(stream: io.BytesIO, roots: dict, what: str) -> None:
    """Reads the storage key list and each storage's bytes (after the pickle) into ``roots``."""
    keys = unpickle_restricted(stream, what=what)
    if not isinstance(keys, list) or set(keys) != set(roots):
        raise CheckpointFormatError(f"{what}: the storage key list does not match the tensors.")
    for key in keys:
        buf = roots[key].data
        header = stream.read(8)
        if len(header) != 8:
            raise CheckpointFormatError(
                f"{what}: the file ends before storage {key} (truncated download?)."
            )
        (count,) = struct.unpack("<q", header)
        raw = stream.read(count * buf.itemsize)
        if count != buf.size or len(raw) != count * buf.itemsize:
            raise CheckpointFormatError(
                f"{what}: storage {key} is truncated or inconsistent ({len(raw)} bytes "
                f"for {buf.size} elements)."
            )
        buf[:] = np.frombuffer(raw, buf.dtype)


def _finalize(obj: Any, memo: dict | None = None) -> Any:
    """Replaces the numpy-array builders by their arrays (in place for dicts, lists and records)."""
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, (dict, list, PersistentObject, TorchModule)):
        memo[key] = obj  # before recursing, so that a cycle comes back to this very object
        _finalize_contents(obj, memo)
        return obj
    if isinstance(obj, _NumpyArray):
        if obj.array is None:
            raise CheckpointFormatError(
                "a pickled numpy array was never filled in (malformed file)."
            )
        out = obj.array
    elif isinstance(obj, tuple):
        out = tuple(_finalize(v, memo) for v in obj)
    else:
        out = obj
    memo[key] = out
    return out


def _finalize_contents(obj: dict | list | PersistentObject | TorchModule, memo: dict) -> None:
    """:func:`_finalize` of every value a mutable container or record holds, written back in
    place."""
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _finalize(obj[k], memo)
    elif isinstance(obj, list):
        obj[:] = [_finalize(v, memo) for v in obj]
    else:
        obj.state = _finalize(obj.state, memo)
        if isinstance(obj, PersistentObject):
            obj.init_kwargs = _finalize(obj.init_kwargs, memo)
            obj.init_args = _finalize(obj.init_args, memo)


def _load_from_bytes(raw) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``: a nested legacy ``torch.save`` byte
    string."""
    if not isinstance(raw, (bytes, bytearray)):
        raise CheckpointFormatError("torch.storage._load_from_bytes needs bytes.")
    stream = io.BytesIO(bytes(raw))
    if unpickle_restricted(stream, what="embedded storage") != LEGACY_MAGIC:
        raise CheckpointFormatError("embedded storage is not a torch.save byte string.")
    storage = _read_legacy(stream, "embedded storage")
    if not isinstance(storage, _Storage):
        raise CheckpointFormatError("embedded torch.save byte string does not hold a storage.")
    return storage


_ALLOWED = _allowed_globals()


# ---- public entry points -------------------------------------------------------------------------


def read_torch_file(path: str | os.PathLike) -> Any:
    """Reads a torch.save file (zip or legacy) or a plain pickle, without torch and without running
    its code.

    Args:
      path: the file.
    Returns:
      The pickled object tree, with tensors as numpy arrays (views of one array per storage, so
      tensors that shared a storage still share memory), NVlabs persistent objects as
      :class:`PersistentObject`, ``torch.nn`` modules as :class:`TorchModule`, ``EasyDict`` as
      ``dict``.
    Raises:
      UnsafeCheckpointError: the file names a global outside the allow-list (nothing is executed).
      CheckpointFormatError: not a pickle/torch file, truncated, TensorFlow, TorchScript, ...
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                return _finalize(_read_zip(zf, path))
        except zipfile.BadZipFile as err:
            raise CheckpointFormatError(
                f"{path} is a damaged or truncated zip archive ({err}); download it again."
            ) from None
    with open(path, "rb") as f:
        stream = io.BytesIO(f.read())
    if not stream.getbuffer().nbytes:
        raise CheckpointFormatError(f"{path} is empty.")
    try:
        first = unpickle_restricted(stream, what=path)
    except CheckpointFormatError:
        if stream.getbuffer()[0] == 0x80:  # a binary pickle that breaks off: report it as truncated
            raise
        raise CheckpointFormatError(
            f"{path} is not a recognised checkpoint: neither a zip archive (torch.save) nor a "
            "pickle (NVlabs .pkl, "
            f"legacy torch.save); it starts with {bytes(stream.getbuffer()[:16])!r}."
        ) from None
    if isinstance(first, int) and not isinstance(first, bool) and first == LEGACY_MAGIC:
        return _finalize(_read_legacy(stream, path))
    return _finalize(first)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a ``torch.save(module.state_dict())`` file as ``{name: array}``.

    Raises:
      CheckpointFormatError: the file holds something other than a flat mapping of names to tensors.
    """
    obj = read_torch_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{path} holds a {type(obj).__name__}, not a state_dict (a mapping of names "
            "to tensors)."
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointFormatError(
            f"{path} is not a flat state_dict: entries {bad[:5]} are not tensors "
            f"(top-level keys: {list(obj)[:10]})."
        )
    return dict(obj)
