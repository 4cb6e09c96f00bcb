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

Before any of that, ``_scan`` walks the opcodes once without building anything, so that damage
costs no more than reading the file: every length must fit in the bytes that remain, and every
memo index must be one the stream can have made by then. (The C unpickler keeps its memo as an
array and grows it to twice any index a PUT names, so one damaged byte that turns a BINPUT into a
LONG_BINPUT of index ~2**30 made it allocate and clear gigabytes: up to half a minute.) ``_plain``
then converts shared objects once, so a small file of nested references cannot expand into an
exponentially large tree.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from privdyn.errors import PrivdynError

_DTYPES = frozenset(["b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"])


class _Refused(pickle.UnpicklingError):
    pass


# How each opcode's argument is laid out, as (kind, size, signed), from pickletools' table: _FIXED,
# n bytes; _LINE, n lines each ended by b"\n"; or _LEN, a little-endian length of n bytes (signed
# or not) followed by that many bytes.
_FIXED, _LINE, _LEN = 0, 1, 2
_LEN_ARGS = {"string1": (1, False), "bytes1": (1, False), "unicodestring1": (1, False), "long1": (1, False),
             "string4": (4, True), "long4": (4, True), "bytes4": (4, False), "unicodestring4": (4, False),
             "bytes8": (8, False), "bytearray8": (8, False), "unicodestring8": (8, False)}
_MEMO_PUT = frozenset(b"pqr\x94")  # PUT, BINPUT, LONG_BINPUT, MEMOIZE
_MEMO_GET = frozenset(b"ghj")  # GET, BINGET, LONG_BINGET
_DECIMAL = frozenset(b"ILgp")  # INT, LONG, GET, PUT: a decimal number on a line
_MAX_DIGITS = 4300  # Python's own limit on int(str); longer decimal text is refused before parsing


def _opcode_table() -> list[tuple[int, int, bool] | None]:
    table: list[tuple[int, int, bool] | None] = [None] * 256
    for op in pickletools.opcodes:
        code, arg = op.code.encode("latin1")[0], op.arg
        if arg is None:
            table[code] = (_FIXED, 0, False)
        elif arg.n >= 0:
            table[code] = (_FIXED, arg.n, False)
        elif arg.n == pickletools.UP_TO_NEWLINE:
            table[code] = (_LINE, 2 if arg.name.endswith("_pair") else 1, False)
        else:
            table[code] = (_LEN, *_LEN_ARGS[arg.name])
    return table


_OPCODES = _opcode_table()


def _scan(data: bytes) -> None:
    """Check the opcode stream up to STOP in one linear pass; damage raises UnpicklingError.

    Every length and line must end inside ``data``, every memo index must be at most the number of
    memo puts so far (picklers number them 0, 1, 2, ... and Python 2's cPickle 1, 2, 3, ...), and
    decimal numbers must be short. Whatever passes costs the unpickler time and memory linear in
    ``len(data)``; the unpickler itself checks everything else (stack, marks, types)."""
    n, pos, puts, table = len(data), 0, 0, _OPCODES
    while pos < n:
        start, code = pos, data[pos]
        layout = table[code]
        if layout is None:
            raise pickle.UnpicklingError(f"invalid opcode {code:#04x} at byte {start}")
        kind, size, signed = layout
        pos += 1
        if kind == _FIXED:
            arg, pos = data[pos:pos + size], pos + size
        elif kind == _LINE:
            for _ in range(size):
                end = data.find(b"\n", pos)
                if end < 0:
                    raise pickle.UnpicklingError(f"opcode {chr(code)!r} at byte {start}: its line never ends")
                arg, pos = data[pos:end], end + 1
                if code in _DECIMAL and len(arg) > _MAX_DIGITS + 2:
                    raise pickle.UnpicklingError(f"opcode {chr(code)!r} at byte {start}: a number of {len(arg)} "
                                                 "characters")
        else:
            length = int.from_bytes(data[pos:pos + size], "little", signed=signed)
            pos += size
            if length < 0 or length > n - pos:
                raise pickle.UnpicklingError(f"opcode {chr(code)!r} at byte {start} announces {length} bytes, "
                                             f"{max(n - pos, 0)} remain")
            pos += length
            continue
        if pos > n:
            raise pickle.UnpicklingError(f"opcode {chr(code)!r} at byte {start} is cut off")
        if code == 0x2e:  # STOP: the unpickler reads no further
            return
        if code == 0x95:  # FRAME: the frame's length must fit too
            if int.from_bytes(arg, "little") > n - pos:
                raise pickle.UnpicklingError(f"frame at byte {start} is longer than the rest of the data")
        elif code in _MEMO_PUT or code in _MEMO_GET:
            if code == 0x94:
                index = puts
            elif code in b"gp":
                if not (arg.isdigit() and len(arg) <= 20):
                    raise pickle.UnpicklingError(f"bad memo index {arg[:30]!r} at byte {start}")
                index = int(arg)
            else:
                index = int.from_bytes(arg, "little")
            if code in _MEMO_PUT:
                puts += 1
            if index > puts:
                raise pickle.UnpicklingError(f"memo index {index} at byte {start}, after only {puts} memo puts")
    raise pickle.UnpicklingError("pickle data was truncated: no STOP opcode")


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


_BUSY = object()  # in ``_plain``'s ``done`` while a container's items are being converted


def _plain(obj: Any, done: dict[int, Any] | None = None) -> Any:
    """Replace the stand-ins by what they built; anything else must be plain data.

    A container that the pickle refers to more than once (through the memo) is converted once and
    shared, as it was in the pickle, so the work is linear in the size of the file. ``done`` maps
    ``id`` of an original container to its converted copy (the originals stay alive meanwhile), or
    to ``_BUSY`` while it is being converted: meeting it again then means a cycle."""
    if isinstance(obj, _Array):
        if obj.array is None:
            raise _Refused("an array that was never filled in")
        return obj.array
    if isinstance(obj, np.ndarray | str | bytes | bytearray | int | float | complex | bool | type(None)):
        return obj
    if not isinstance(obj, dict | list | tuple):
        raise _Refused(f"unexpected {type(obj).__name__} object")
    done = {} if done is None else done
    if id(obj) in done:
        if done[id(obj)] is _BUSY:
            raise _Refused(f"a {type(obj).__name__} that contains itself")
        return done[id(obj)]
    done[id(obj)] = _BUSY
    if isinstance(obj, dict):
        out: Any = {_plain(k, done): _plain(v, done) for k, v in obj.items()}
    else:
        out = type(obj)(_plain(v, done) for v in obj)
    done[id(obj)] = out
    return out


def loads(data: bytes, source: str = "pickle") -> Any:
    """Safely unpickle ``data``; any refusal or damage raises PrivdynError naming ``source``."""
    try:
        _scan(data)
        return _plain(_Unpickler(io.BytesIO(data)).load())
    except _Refused as err:
        raise PrivdynError(f"{source}: refused to read it: {err}. It is not a plain data pickle such as a "
                           "CIFAR python batch; only use files from the official archive.") from None
    except Exception as err:  # noqa: BLE001 -- any damage: EOFError, UnpicklingError, ValueError, struct.error ...
        raise PrivdynError(f"{source} is not a readable pickle ({type(err).__name__}: {err}); "
                           "it is damaged or truncated: download and extract it again.") from None


def load(path: Path) -> Any:
    """Safely unpickle the file at ``path``."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PrivdynError(f"Cannot read {path}: {err.strerror}. Check the file and its permissions.") from None
    return loads(data, str(path))
