"""Read pickles of plain data and numpy arrays (the CIFAR python batches) without running code.

Unpickling calls whatever globals a file names, so an untrusted pickle can run anything. This
reader's ``find_class`` refuses every global except the few that numpy arrays are pickled with
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, numpy's
``_frombuffer`` for protocol 5, and ``_codecs.encode`` and ``bytes()`` that Python 3 uses for bytes
in protocol 2),
and even for those it never calls numpy's own code: it returns stand-ins that check their
arguments (plain numeric dtypes only, byte counts that match the shape) and build the array with
``np.frombuffer``. Everything else in the file must be dicts, lists, tuples, strings, bytes and
numbers.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from privdyn.errors import PrivdynError

_DTYPES = frozenset(["b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"])


class _Refused(pickle.UnpicklingError):
    pass


class _Global:
    """A stand-in for one allowed global: callable, and refusing to be modified by BUILD."""

    __slots__ = ("_fn", "_name")

    def __init__(self, name: str, fn: Callable[..., Any] | None):
        self._name, self._fn = name, fn

    def __call__(self, *args: Any) -> Any:
        if self._fn is None:
            raise _Refused(f"{self._name} may not be called")
        return self._fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"refused to modify {self._name}")


class _Dtype:
    """A plain numeric dtype, built in two steps as pickle does (call, then BUILD with byte order)."""

    __slots__ = ("code", "dtype")

    def __init__(self, code: Any, align: Any = False, copy: Any = False):
        if code not in _DTYPES:
            raise _Refused(f"dtype {code!r} is not a plain numeric dtype")
        self.code, self.dtype = code, None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in ("<", ">", "|", "=")
                and state[2] is None and state[3] is None and state[4] is None):
            raise _Refused(f"unsupported dtype state {state!r}")
        self.dtype = np.dtype(self.code).newbyteorder(state[1] if state[1] in "<>" else "=")


def _dtype_of(d: Any) -> np.dtype:
    if not isinstance(d, _Dtype) or d.dtype is None:
        raise _Refused("array without a valid dtype")
    return d.dtype


def _as_bytes(data: Any) -> bytes | bytearray:
    if isinstance(data, str):  # a Python 2 str read with encoding='latin1'
        return data.encode("latin1")
    if isinstance(data, bytes | bytearray):
        return data
    raise _Refused(f"array data of type {type(data).__name__}")


def _array(data: Any, dtype: np.dtype, shape: Any, fortran: bool) -> np.ndarray:
    if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise _Refused(f"bad array shape {shape!r}")
    raw = _as_bytes(data)
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise _Refused(f"array of shape {shape} and dtype {dtype} needs {math.prod(shape) * dtype.itemsize} "
                       f"bytes, the file has {len(raw)}")
    return np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")


class _Array:
    """What ``_reconstruct(ndarray, (0,), b'b')`` returns; BUILD fills in shape, dtype and bytes."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[3], bool)):
            raise _Refused("unsupported array state")
        _, shape, dtype, fortran, data = state
        self.array = _array(data, _dtype_of(dtype), shape, fortran)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase):
        super().__init__(file, encoding="latin1")
        ndarray = _Global("numpy.ndarray", None)

        def reconstruct(cls: Any, shape: Any, typecode: Any) -> _Array:
            if cls is not ndarray:
                raise _Refused("_reconstruct of something other than numpy.ndarray")
            return _Array()

        def frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
            if order not in ("C", "F"):
                raise _Refused(f"bad array order {order!r}")
            return _array(buf, _dtype_of(dtype), shape, order == "F")

        def encode(text: Any, encoding: Any) -> bytes:
            if not isinstance(text, str) or encoding != "latin1":
                raise _Refused("_codecs.encode other than of a str to latin1")
            return text.encode("latin1")

        def empty_bytes() -> bytes:  # protocol 2 writes b"" as a call of bytes()
            return b""

        allowed = {"numpy.ndarray": ndarray, "numpy.dtype": _Global("numpy.dtype", _Dtype),
                   "_codecs.encode": _Global("_codecs.encode", encode)}
        for mod in ("builtins", "__builtin__"):
            allowed[f"{mod}.bytes"] = _Global("bytes", empty_bytes)
        for mod in ("numpy.core", "numpy._core"):
            allowed[f"{mod}.multiarray._reconstruct"] = _Global("_reconstruct", reconstruct)
            allowed[f"{mod}.numeric._frombuffer"] = _Global("_frombuffer", frombuffer)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[f"{module}.{name}"]
        except KeyError:
            raise _Refused(f"refused to load global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refused a persistent id")


def _plain(obj: Any) -> Any:
    """Replace the stand-ins by what they built; anything else must be plain data."""
    if isinstance(obj, _Array):
        if obj.array is None:
            raise _Refused("an array that was never filled in")
        return obj.array
    if isinstance(obj, dict):
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.ndarray | str | bytes | bytearray | int | float | complex | bool | type(None)):
        return obj
    raise _Refused(f"unexpected {type(obj).__name__} object")


def loads(data: bytes, source: str = "pickle") -> Any:
    """Safely unpickle ``data``; any refusal or damage raises PrivdynError naming ``source``."""
    try:
        return _plain(_Unpickler(io.BytesIO(data)).load())
    except _Refused as err:
        raise PrivdynError(f"{source}: refused to read it: {err}. It is not a plain data pickle such as a "
                           "CIFAR python batch; only use files from the official archive.") from None
    except Exception as err:  # any damage: EOFError, UnpicklingError, ValueError, struct.error ...
        raise PrivdynError(f"{source} is not a readable pickle ({type(err).__name__}: {err}); "
                           "it is damaged or truncated: download and extract it again.") from None


def load(path: Path) -> Any:
    """Safely unpickle the file at ``path``."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PrivdynError(f"Cannot read {path}: {err.strerror}. Check the file and its permissions.") from None
    return loads(data, str(path))
