"""Loaders for real data files: IDX, CIFAR python batches, image folders, npz and CSV.

The shared benchmark arrays (../shared/data, or $PRIVDYN_SHARED_DATA) are written into the standard
formats by the simple writers below, independent of privdyn's readers, and must come back exactly.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privdyn.config import config_from_dict, load_config
from privdyn.data import DATASETS, load_dataset, safe_pickle
from privdyn.data.cifar import read_batches
from privdyn.data.idx import read_idx
from privdyn.data.imagefolder import decode, list_split
from privdyn.data.roots import ENV_VAR, data_root
from privdyn.errors import PrivdynError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PRIVDYN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {("train", "x"): "train-images-idx3-ubyte", ("train", "y"): "train-labels-idx1-ubyte",
             ("test", "x"): "t10k-images-idx3-ubyte", ("test", "y"): "t10k-labels-idx1-ubyte"}


@functools.cache
def _shared_file(name: str) -> dict[str, np.ndarray]:
    with np.load(SHARED / name, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def shared(name: str, n_train: int | None = None, n_test: int | None = None) -> dict[str, np.ndarray]:
    """Arrays of a shared file (the first n_train / n_test samples); skips when the file is absent."""
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"shared data {path} is absent (set PRIVDYN_SHARED_DATA to the shared/data folder)")
    d = dict(_shared_file(name))
    if "x_train" in d:
        d["x_train"], d["y_train"] = d["x_train"][:n_train], d["y_train"][:n_train]
        d["x_test"], d["y_test"] = d["x_test"][:n_test], d["y_test"][:n_test]
    return d


# ----- simple independent writers -------------------------------------------------------------
def idx_file(a: np.ndarray) -> bytes:
    assert a.dtype == np.uint8
    return bytes([0, 0, 8, a.ndim]) + b"".join(struct.pack(">I", s) for s in a.shape) + a.tobytes()


def write_idx_folder(folder: Path, d: dict, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for (split, xy), name in IDX_NAMES.items():
        raw = idx_file(d[f"{xy}_{split}"])
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the CIFAR batches: byte strings as BINSTRING and
    numpy's 1.x global names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        head = (pickle.SHORT_BINSTRING + bytes([len(obj)]) if len(obj) < 256
                else pickle.BINSTRING + struct.pack("<i", len(obj)))
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        mod = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{mod}\n{obj.__name__}\n".encode())
        self.memoize(obj)


def py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_rows(x_hwc: np.ndarray) -> np.ndarray:
    """[n, 32, 32, 3] -> [n, 3072]: the red plane, then green, then blue, each row by row."""
    n = len(x_hwc)
    return np.concatenate([x_hwc[..., c].reshape(n, 1024) for c in range(3)], axis=1)


def write_cifar10(folder: Path, d: dict, dumps=py2_dumps) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(d["y_train"])), 5)
    for i, idx in enumerate(chunks, 1):
        batch = {b"batch_label": b"training batch", b"labels": [int(v) for v in d["y_train"][idx]],
                 b"data": cifar_rows(d["x_train"][idx]), b"filenames": [b"f.png"] * len(idx)}
        (folder / f"data_batch_{i}").write_bytes(dumps(batch))
    test = {b"batch_label": b"testing batch", b"labels": [int(v) for v in d["y_test"]],
            b"data": cifar_rows(d["x_test"]), b"filenames": [b"f.png"] * len(d["y_test"])}
    (folder / "test_batch").write_bytes(dumps(test))


def expected_images(x_nchw_uint8: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale to [0, 1], then standardise each channel by the pool's mean and std (a plain loop)."""
    p, t = x_nchw_uint8.astype(np.float64) / 255, x_test.astype(np.float64) / 255
    for c in range(p.shape[1]):
        m, s = p[:, c].mean(), p[:, c].std()
        p[:, c], t[:, c] = (p[:, c] - m) / s, (t[:, c] - m) / s
    return p, t


# ----- data root ----------------------------------------------------------------------------
def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert data_root("/given") == Path("/given")
    assert data_root(None) == tmp_path / "env"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root(None) == tmp_path / "home" / ".privdyn" / "data"


def test_data_root_is_not_part_of_the_training_hash():
    a = config_from_dict({"dataset": {"name": "mnist", "root": "/a"}})
    b = config_from_dict({"dataset": {"name": "mnist", "root": "/b"}})
    c = config_from_dict({"dataset": {"name": "mnist", "root": "/a", "n_pool": 100}})
    assert a.section_hash("dataset") == b.section_hash("dataset") != c.section_hash("dataset")


# ----- IDX ----------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_gives_back_the_arrays(tmp_path, gz):
    d = shared("mnist_train20k_test10k_uint8.npz", 600, 300)
    write_idx_folder(tmp_path / "mnist", d, gz)
    for (split, xy), name in IDX_NAMES.items():
        got = read_idx(tmp_path / "mnist" / (name + ".gz" if gz else name))
        assert got.dtype == np.uint8 and np.array_equal(got, d[f"{xy}_{split}"])
    ds = load_dataset("mnist", root=str(tmp_path))
    assert ds.kind == "image" and ds.x_pool.dtype == np.float32 and ds.x_pool.shape == (600, 1, 28, 28)
    assert np.array_equal(ds.y_pool, d["y_train"]) and np.array_equal(ds.y_test, d["y_test"])
    p, t = expected_images(d["x_train"][:, None], d["x_test"][:, None])
    np.testing.assert_allclose(ds.x_pool, p, atol=2e-5)
    np.testing.assert_allclose(ds.x_test, t, atol=2e-5)


def test_idx_other_types_and_gzip_detected_by_content(tmp_path):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(">i4")
    raw = bytes([0, 0, 0x0C, 3]) + struct.pack(">3I", 2, 3, 4) + a.tobytes()
    (tmp_path / "x").write_bytes(gzip.compress(raw))  # gzipped although the name says raw
    got = read_idx(tmp_path / "x")
    assert got.dtype == np.int32 and got.dtype.isnative and np.array_equal(got, a)
    f = np.array([1.5, -2.25], dtype=">f8")
    (tmp_path / "f").write_bytes(bytes([0, 0, 0x0E, 1]) + struct.pack(">I", 2) + f.tobytes())
    assert np.array_equal(read_idx(tmp_path / "f"), [1.5, -2.25])


def test_subsets_are_seeded_and_come_from_the_files(tmp_path):
    d = shared("mnist_train20k_test10k_uint8.npz", 500, 200)
    write_idx_folder(tmp_path / "mnist", d, True)
    a = load_dataset("mnist", 101, 50, seed=4, root=str(tmp_path))
    b = load_dataset("mnist", 101, 50, seed=4, root=str(tmp_path))
    c = load_dataset("mnist", 101, 50, seed=5, root=str(tmp_path))
    assert a.n_pool == 100 and len(a.y_test) == 50  # the pool is made even
    assert np.array_equal(a.x_pool, b.x_pool) and not np.array_equal(a.y_pool, c.y_pool)
    # undo the standardisation (pixel 0 is the minimum, 255 the maximum): every pool image is a
    # distinct image of the file, with its label
    z = a.x_pool[:, 0]
    rows = np.rint((z - z.min()) / (z.max() - z.min()) * 255).astype(np.uint8)
    full = {d["x_train"][i].tobytes(): d["y_train"][i] for i in range(500)}
    keys = [r.tobytes() for r in rows]
    assert len(set(keys)) == 100 and all(k in full for k in keys)
    assert [full[k] for k in keys] == list(a.y_pool)


@pytest.mark.parametrize("damage,needle", [
    (lambda b: b[:-7], "truncated"),
    (lambda b: b + b"\0", "longer than its header says"),
    (lambda b: b"\x00\x00\x07\x03" + b[4:], "not an IDX file"),
    (lambda b: b"\x12\x34" + b[2:], "not an IDX file"),
    (lambda b: b[:9], "truncated inside its IDX header"),
    (lambda b: b"", "not an IDX file"),
])
def test_damaged_idx_is_a_clear_error(tmp_path, damage, needle):
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(damage(idx_file(a)))
    with pytest.raises(PrivdynError, match=needle) as e:
        read_idx(p)
    assert str(p) in str(e.value)


def test_truncated_gzip_and_mismatched_labels(tmp_path):
    d = shared("mnist_train20k_test10k_uint8.npz", 50, 20)
    write_idx_folder(tmp_path / "mnist", d, True)
    img = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    img.write_bytes(img.read_bytes()[:-30])
    with pytest.raises(PrivdynError, match="damaged gzip"):
        load_dataset("mnist", root=str(tmp_path))
    write_idx_folder(tmp_path / "mnist", d, True)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_file(d["y_test"][:-1])))
    with pytest.raises(PrivdynError, match="do not belong together"):
        load_dataset("mnist", root=str(tmp_path))
    bad = d["y_test"].copy()
    bad[3] = 10
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_file(bad)))
    with pytest.raises(PrivdynError, match="labels 0..10; these datasets have classes 0-9"):
        load_dataset("mnist", root=str(tmp_path))


def test_missing_files_name_every_place_and_what_to_get(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(PrivdynError) as e:
        load_dataset("mnist", root=str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "mnist") in msg and str(tmp_path / "MNIST" / "raw") in msg and "no such folder" in msg
    assert "t10k-labels-idx1-ubyte.gz or t10k-labels-idx1-ubyte" in msg  # what that folder lacks
    assert "train-images-idx3-ubyte.gz" in msg and "LeCun" in msg and "--data-root" in msg
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"x")
    with pytest.raises(PrivdynError, match=r"extract it with `tar xzf") as e:
        load_dataset("cifar10", root=str(tmp_path))
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value)
    with pytest.raises(PrivdynError, match="dataset.options.path"):
        load_dataset("npz", root=str(tmp_path))


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason=f"{DEBIAN_FASHION} is absent: "
                    "`apt-get install -y dataset-fashion-mnist` installs the official Fashion-MNIST IDX files")
def test_debian_fashion_mnist_full_idx_files(tmp_path):
    from privdyn.data.idx import read_split

    x, y = read_split(DEBIAN_FASHION, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    xt, yt = read_split(DEBIAN_FASHION, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    if (SHARED / "fashion_mnist_train20k_test10k_uint8.npz").is_file():
        d = shared("fashion_mnist_train20k_test10k_uint8.npz")
        assert np.array_equal(x[:20000, 0], d["x_train"]) and np.array_equal(y[:20000], d["y_train"])
        assert np.array_equal(xt[:, 0], d["x_test"]) and np.array_equal(yt, d["y_test"])
    # found through the system fallback when the data root has no copy
    ds = load_dataset("fashion_mnist", 2000, 500, seed=1, root=str(tmp_path))
    assert ds.x_pool.shape == (2000, 1, 28, 28) and ds.num_classes == 10
    assert DATASETS["fashion_mnist"].status(str(tmp_path)) == f"found: {DEBIAN_FASHION}"


# ----- safe pickles and CIFAR -----------------------------------------------------------------
def test_cifar10_official_format_roundtrip(tmp_path):
    d = shared("cifar10_jpegq75_train10k_test10k_uint8.npz", 250, 120)
    write_cifar10(tmp_path / "cifar-10-batches-py", d)
    assert b"cnumpy.core.multiarray\n_reconstruct" in (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    x, y = read_batches(tmp_path / "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "labels", 10)
    assert np.array_equal(x, d["x_train"].transpose(0, 3, 1, 2)) and np.array_equal(y, d["y_train"])
    ds = load_dataset("cifar10", root=str(tmp_path))
    assert ds.x_pool.shape == (250, 3, 32, 32) and ds.x_test.shape == (120, 3, 32, 32)
    assert np.array_equal(ds.y_test, d["y_test"])
    p, t = expected_images(d["x_train"].transpose(0, 3, 1, 2), d["x_test"].transpose(0, 3, 1, 2))
    np.testing.assert_allclose(ds.x_pool, p, atol=2e-5)
    np.testing.assert_allclose(ds.x_test, t, atol=2e-5)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_pickled_by_python3_numpy(tmp_path, protocol):
    d = shared("cifar10_jpegq75_train10k_test10k_uint8.npz", 50, 20)
    write_cifar10(tmp_path / "c", d, lambda o: pickle.dumps({k.decode(): v for k, v in o.items()}, protocol=protocol))
    x, y = read_batches(tmp_path / "c", ("test_batch",), "labels", 10)
    assert np.array_equal(x, d["x_test"].transpose(0, 3, 1, 2)) and np.array_equal(y, d["y_test"])


def test_cifar100_fine_and_coarse_labels(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    parts = {}
    for split, n in (("train", 40), ("test", 10)):
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        fine, coarse = rng.integers(0, 100, n), rng.integers(0, 20, n)
        parts[split] = (x, fine, coarse)
        (folder / split).write_bytes(py2_dumps({b"data": cifar_rows(x), b"fine_labels": [int(v) for v in fine],
                                                b"coarse_labels": [int(v) for v in coarse]}))
    ds = load_dataset("cifar100", root=str(tmp_path))
    assert ds.num_classes == 100 and np.array_equal(ds.y_pool, parts["train"][1])
    dc = load_dataset("cifar100", root=str(tmp_path), options={"labels": "coarse"})
    assert dc.num_classes == 20 and np.array_equal(dc.y_test, parts["test"][2])
    with pytest.raises(PrivdynError, match="dataset.options.labels: Input should be 'fine' or 'coarse'"):
        load_dataset("cifar100", root=str(tmp_path), options={"labels": "both"})


class _Evil:
    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch {self.marker}",)
        if self.how == "eval":
            return eval, (f"open({str(self.marker)!r}, 'w')",)
        return subprocess.call, (["touch", str(self.marker)],)


@pytest.mark.parametrize("how", ["system", "eval", "subprocess"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, how):
    marker = tmp_path / "pwned"
    for protocol in (2, 5):
        blob = pickle.dumps({"data": _Evil(marker, how), "labels": [0]}, protocol=protocol)
        with pytest.raises(PrivdynError, match="refused to load global"):
            safe_pickle.loads(blob, "evil")
    (tmp_path / "cifar-10-batches-py").mkdir()
    for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (tmp_path / "cifar-10-batches-py" / n).write_bytes(pickle.dumps(_Evil(marker, how), protocol=2))
    with pytest.raises(PrivdynError, match="refused"):
        load_dataset("cifar10", root=str(tmp_path))
    assert not marker.exists()


def _reconstruct_pickle(cls_global: bytes, dtype: bytes, state: bytes) -> bytes:
    """A hand-made protocol-2 pickle of numpy's _reconstruct path with chosen pieces."""
    return (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\n" + cls_global + b"K\x00\x85U\x01b\x87R"
            + b"(K\x01K\x02\x85cnumpy\ndtype\nU\x02" + dtype + b"K\x00K\x01\x87R" + state + b"\x89U\x02abtb.")


def test_hand_made_reconstruct_pickles():
    good_state = b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    assert np.array_equal(safe_pickle.loads(_reconstruct_pickle(b"cnumpy\nndarray\n", b"u1", good_state)), [97, 98])
    cases = [
        (_reconstruct_pickle(b"cnumpy\ndtype\n", b"u1", good_state), "other than numpy.ndarray"),
        (_reconstruct_pickle(b"cnumpy\nndarray\n", b"O8", good_state), "not a plain numeric dtype"),
        (_reconstruct_pickle(b"cnumpy\nndarray\n", b"u2", good_state.replace(b"|", b"<")), "needs 4 bytes"),
        (_reconstruct_pickle(b"cnumpy\nndarray\n", b"u1", b"(K\x03U\x01|NN}NJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"),
         "unsupported dtype state"),
        (b"\x80\x02cnumpy\nndarray\n}b.", "refused to modify numpy.ndarray"),
        (b"\x80\x02cnumpy\nndarray\n)R.", "may not be called"),
        (b"\x80\x02cnumpy\nload\n.", "refused to load global numpy.load"),
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00utf-7\x86R.", "latin1"),
        (b"\x80\x02cbuiltins\ngetattr\n.", "refused to load global builtins.getattr"),
        (b"\x80\x02X\x01\x00\x00\x00a\x94Q.", "persistent id"),
    ]
    for blob, needle in cases:
        with pytest.raises(PrivdynError, match=needle):
            safe_pickle.loads(blob, "hand-made")


_plain = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=5)
    | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12)
_arrays = st.builds(
    lambda dt, shape, order, seed: np.asarray(np.random.default_rng(seed).integers(0, 200, size=shape), dtype=dt)
    if order == "C" else np.asfortranarray(np.random.default_rng(seed).integers(0, 200, size=shape).astype(dt)),
    st.sampled_from(["u1", "<i4", ">i4", "<f8", ">f4", "i8", "?"]),
    st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple), st.sampled_from("CF"), st.integers(0, 99))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=_plain, arr=_arrays, protocol=st.integers(2, 5))
def test_plain_data_and_arrays_roundtrip(obj, arr, protocol):
    got = safe_pickle.loads(pickle.dumps({"obj": obj, "arr": arr}, protocol=protocol))
    assert got["obj"] == obj
    assert got["arr"].dtype == arr.dtype and np.array_equal(got["arr"], arr)


@settings(max_examples=150, deadline=None)
@given(pos=st.integers(0, 10**6), byte=st.integers(0, 255), cut=st.booleans())
def test_damaged_pickles_load_or_give_a_privdyn_error(pos, byte, cut):
    blob = bytearray(py2_dumps({b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [1, 2, 3]}))
    pos %= len(blob)
    blob = blob[:pos] if cut else blob[:pos] + bytes([byte]) + blob[pos + 1:]
    try:
        out = safe_pickle.loads(bytes(blob))
    except PrivdynError:
        return
    assert not any(callable(v) for v in (out.values() if isinstance(out, dict) else [out]))


def _small_batch(kind: str) -> bytes:
    """A CIFAR-like batch of two 8-byte rows: as Python 2's cPickle wrote it, or Python 3's protocol 5."""
    data, labels = np.arange(16, dtype=np.uint8).reshape(2, 8), [0, 1]
    if kind == "py2":
        return py2_dumps({b"data": data, b"labels": labels})
    return pickle.dumps({"data": data, "labels": labels}, protocol=5)


def _assert_plain(out) -> None:
    """What safe_pickle returned holds only plain data and numpy arrays, nothing callable."""
    todo = [out]
    while todo:
        v = todo.pop()
        if isinstance(v, dict):
            todo.extend(v.keys())
            todo.extend(v.values())
        elif isinstance(v, list | tuple):
            todo.extend(v)
        else:
            assert isinstance(v, np.ndarray | str | bytes | bytearray | int | float | complex | type(None)), type(v)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["py2", "protocol5"])
def test_every_damaged_byte_loads_or_is_refused(kind):
    """Every byte of a small batch replaced by 0x00, 0x72 (LONG_BINPUT), 0xff and itself xor 1: a
    few hundred loads, each either a result of plain data or a PrivdynError (any other exception
    fails the test), and each cheap: the pickle is 200 bytes, so nothing may allocate or loop."""
    blob = _small_batch(kind)
    assert safe_pickle.loads(blob)["labels"] == [0, 1]  # BINSTRING keys come back as str (latin1)
    refused = 0
    for pos in range(len(blob)):
        for byte in sorted({0x00, 0x72, 0xFF, blob[pos] ^ 0x01}):
            damaged = blob[:pos] + bytes([byte]) + blob[pos + 1:]
            try:
                out = safe_pickle.loads(damaged, "fuzz")
            except PrivdynError as err:
                assert str(err).startswith("fuzz"), err
                refused += 1
                continue
            _assert_plain(out)
    assert refused > len(blob)  # most damage is caught, not silently read


def _opcode_positions(blob: bytes) -> list[tuple[int, str]]:
    import pickletools

    return [(pos, op.name) for op, _, pos in pickletools.genops(blob)]


@pytest.mark.timeout(60)
def test_long_binput_written_over_a_real_size_batch_is_refused_at_once():
    """The report: 0x72 (LONG_BINPUT) written over an opcode of a 100 x 3072 batch made the C unpickler
    grow its memo to twice a 4-byte index read from the data (gigabytes, up to 27 s per load). The
    scan before unpickling refuses a memo index beyond the puts so far, so each load is quick."""
    rng = np.random.default_rng(5)
    blob = py2_dumps({b"batch_label": b"training batch 1 of 5",
                      b"data": rng.integers(0, 256, (100, 3072), dtype=np.uint8),
                      b"labels": [int(v) for v in rng.integers(0, 10, 100)],
                      b"filenames": [b"img_%03d.png" % i for i in range(100)]})
    ops = [(pos, name) for pos, name in _opcode_positions(blob) if name not in ("PROTO", "STOP")]
    chosen = ops[:16] + ops[-16:]  # the array's header and the labels/filenames after its bytes
    assert len(chosen) == 32 and sum(name == "BINPUT" for _, name in chosen) >= 10
    for pos, name in chosen:
        damaged = blob[:pos] + b"r" + blob[pos + 1:]
        with pytest.raises(PrivdynError) as err:
            safe_pickle.loads(damaged, "batch")
        if name == "BINPUT":  # its index byte and the 3 bytes after it now make a huge index
            assert "memo index" in str(err.value), err.value


@pytest.mark.parametrize(("blob", "needle"), [
    (b"\x80\x02K\x01r\xff\xff\xff\x7f.", "memo index 2147483647 at byte 4, after only 1 memo puts"),
    (b"\x80\x02K\x01p99999999999\n.", "memo index 99999999999"),
    (b"\x80\x02K\x01p1" + b"0" * 30 + b"\n.", "bad memo index"),
    (b"\x80\x02j\x00\x00\x00\x10.", "memo index 268435456"),
    (b"\x80\x02T\xff\xff\xff\x7fab.", "announces 2147483647 bytes, 3 remain"),
    (b"\x80\x02T\xff\xff\xff\xffab.", "announces -1 bytes"),
    (b"\x80\x04\x8e" + b"\xff" * 8 + b".", "announces 18446744073709551615 bytes"),
    (b"\x80\x04\x95" + b"\xff" * 7 + b"\x7fN.", "frame at byte 2 is longer"),
    (b"\x80\x02I" + b"7" * 5000 + b"\n.", "a number of 5000 characters"),
    (b"\x80\x02cnumpy\nndarray", "its line never ends"),
    (b"\x80\x02J\x01\x00", "is cut off"),
    (b"\x80\x02N", "no STOP opcode"),
    (b"\x80\x02\xffN.", "invalid opcode 0xff at byte 2"),
])
def test_scan_refuses_impossible_lengths_and_memo_indices(blob, needle):
    with pytest.raises(PrivdynError, match="not a readable pickle") as err:
        safe_pickle.loads(blob, "hand-made")
    assert needle in str(err.value)


@pytest.mark.timeout(60)
def test_shared_references_are_converted_once_and_cycles_refused():
    nested = [np.arange(3, dtype=np.uint8)]
    for _ in range(60):  # 2**60 leaves if the shared lists were copied apart
        nested = [nested, nested]
    out = safe_pickle.loads(pickle.dumps(nested, protocol=2))
    assert out[0] is out[1] and len(pickle.dumps(out, protocol=2)) < 1000
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(PrivdynError, match="a list that contains itself"):
        safe_pickle.loads(pickle.dumps(cyclic, protocol=2))


# ----- image folders ------------------------------------------------------------------------
def write_image_folder(folder: Path, x: np.ndarray, y: np.ndarray, classes: list[str]) -> None:
    from PIL import Image

    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        (folder / classes[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / classes[label] / f"{i:05d}.png")


def test_image_folder_greyscale_and_rgb(tmp_path):
    mn = shared("mnist_train20k_test10k_uint8.npz", 120, 60)
    names = [f"digit_{k}" for k in range(10)]
    write_image_folder(tmp_path / "mn" / "train", mn["x_train"], mn["y_train"], names)
    write_image_folder(tmp_path / "mn" / "test", mn["x_test"], mn["y_test"], names)
    ds = load_dataset("imagefolder", root=str(tmp_path), options={"path": "mn"})
    # files are listed class by class, in name order: the same order as a stable sort by label
    order = np.argsort(mn["y_train"], kind="stable")
    assert ds.x_pool.shape == (120, 1, 28, 28) and np.array_equal(ds.y_pool, mn["y_train"][order])
    p, _ = expected_images(mn["x_train"][order][:, None], mn["x_test"][:, None])
    np.testing.assert_allclose(ds.x_pool, p, atol=2e-5)

    cf = shared("cifar10_jpegq75_train10k_test10k_uint8.npz", 40, 20)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_image_folder(tmp_path / "cinic10" / "train", cf["x_train"], cf["y_train"], names)
    write_image_folder(tmp_path / "cinic10" / "test", cf["x_test"], cf["y_test"], names)
    paths, labels, classes = list_split(tmp_path / "cinic10" / "train")
    assert classes == sorted(set(names[k] for k in cf["y_train"]))
    order = np.argsort(cf["y_train"], kind="stable")
    assert np.array_equal(decode(paths, 3), cf["x_train"][order].transpose(0, 3, 1, 2))
    ds = load_dataset("imagefolder", 20, 10, seed=2, root=str(tmp_path))  # default folder ROOT/cinic10
    assert ds.x_pool.shape == (20, 3, 32, 32) and ds.num_classes == len(classes)


def test_image_folder_errors(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    for split, cls, size in (("train", "a", 8), ("train", "b", 9), ("test", "a", 8)):
        (root / split / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((size, size), np.uint8)).save(root / split / cls / "0.png")
    with pytest.raises(PrivdynError, match="resize all images to one size"):
        load_dataset("imagefolder", options={"path": str(root)})
    (root / "test" / "c").mkdir()
    with pytest.raises(PrivdynError, match=r"class folders \['c'\] that the training split lacks"):
        load_dataset("imagefolder", options={"path": str(root)})
    (root / "train" / "b" / "0.png").write_bytes(b"not a png")
    with pytest.raises(PrivdynError, match="Cannot decode image"):
        decode(np.array([root / "train" / "b" / "0.png"], dtype=object), 1)
    with pytest.raises(PrivdynError, match="no folder valid/"):
        load_dataset("imagefolder", options={"path": str(root), "test_split": "valid"})


# ----- npz and CSV --------------------------------------------------------------------------
def test_location30_npz_csv_and_onehot_agree(tmp_path):
    d = shared("location30_bangkok_uint8.npz")
    x, y = d["x"], d["y"]
    np.savez(tmp_path / "location30.npz", x=x, y=y)
    a = load_dataset("location30", root=str(tmp_path), seed=7)
    assert a.kind == "tabular" and a.num_classes == 30 and a.x_pool.dtype == np.float32
    assert len(y) == 5010 and len(a.y_test) == 1002 and a.n_pool == 4008
    # the pool and test rows are a partition of the file's rows (undo the global standardisation)
    both = np.concatenate([a.x_pool, a.x_test])
    rows = np.rint((both - both.min()) / (both.max() - both.min())).astype(np.uint8)
    got = sorted(zip(map(bytes, rows), np.concatenate([a.y_pool, a.y_test]).tolist()))
    assert got == sorted(zip(map(bytes, x), y.tolist()))
    # the original layout: a CSV with the 1-based label first (with and without a header row)
    table = np.column_stack([y.astype(int) + 1, x])
    np.savetxt(tmp_path / "plain.csv", table, fmt="%d", delimiter=",")
    np.savetxt(tmp_path / "head.csv", table, fmt="%d", delimiter=",",
               header=",".join(["label", *(f"f{i}" for i in range(x.shape[1]))]), comments="")
    onehot = np.eye(30, dtype=np.uint8)[y]
    np.savez(tmp_path / "oh.npz", features=x, labels=onehot)
    for f in ("plain.csv", "head.csv", "oh.npz"):
        b = load_dataset("location30", root=str(tmp_path), seed=7, options={"path": f})
        assert np.array_equal(a.x_pool, b.x_pool) and np.array_equal(a.y_pool, b.y_pool), f
        assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_test, b.y_test), f


def test_tabular_split_sizes_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 2, (101, 6)).astype(np.uint8), rng.integers(0, 100, 101)
    np.savez(tmp_path / "purchase100.npz", x=x, y=y)
    ds = load_dataset("purchase100", 60, 30, seed=1, root=str(tmp_path))
    assert ds.n_pool == 60 and len(ds.y_test) == 30 and ds.num_classes == 100
    with pytest.raises(PrivdynError, match="exceeds the 71 samples"):
        load_dataset("purchase100", 80, 30, seed=1, root=str(tmp_path))
    np.savez(tmp_path / "texas100.npz", x=x, y=np.r_[50, y[1:] + 50])
    with pytest.raises(PrivdynError, match=r"labels span 50..\d+, expected 0..99 \(or 1..100\)"):
        load_dataset("texas100", root=str(tmp_path))
    np.savez(tmp_path / "texas100.npz", x=x, z=y)
    with pytest.raises(PrivdynError, match="expected x_train/y_train/x_test/y_test or x/y"):
        load_dataset("texas100", root=str(tmp_path))
    np.savez(tmp_path / "texas100.npz", x=np.array([object()] * 101), y=y)
    with pytest.raises(PrivdynError, match="not a readable npz"):
        load_dataset("texas100", root=str(tmp_path))
    (tmp_path / "texas100.npz").unlink()
    (tmp_path / "texas100.csv").write_text("1,0,1\n2,a,b\n")
    with pytest.raises(PrivdynError, match="must hold numbers"):
        load_dataset("texas100", root=str(tmp_path))


def test_generic_npz_images_tabular_sequences(tmp_path):
    cf = shared("cifar10_jpegq75_train10k_test10k_uint8.npz", 30, 10)
    np.savez(tmp_path / "img.npz", x_train=cf["x_train"], y_train=cf["y_train"],
             x_test=cf["x_test"], y_test=cf["y_test"])
    ds = load_dataset("npz", root=str(tmp_path), options={"path": "img.npz"})
    p, t = expected_images(cf["x_train"].transpose(0, 3, 1, 2), cf["x_test"].transpose(0, 3, 1, 2))
    assert ds.kind == "image" and ds.num_classes == int(max(cf["y_train"].max(), cf["y_test"].max())) + 1
    np.testing.assert_allclose(ds.x_pool, p, atol=2e-5)
    np.testing.assert_allclose(ds.x_test, t, atol=2e-5)
    rng = np.random.default_rng(1)
    xt = rng.normal(size=(50, 4)) * [1, 10, 100, 1000]
    np.savez(tmp_path / "tab.npz", x=xt, y=rng.integers(0, 3, 50))
    ds = load_dataset("npz", root=str(tmp_path), options={"path": str(tmp_path / "tab.npz")})
    assert ds.kind == "tabular" and len(ds.y_test) == 10
    np.testing.assert_allclose(ds.x_pool.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_pool.std(0), 1, atol=1e-4)  # each feature on its own scale
    ds = load_dataset("npz", root=str(tmp_path), options={"path": "tab.npz", "kind": "sequence"})
    assert ds.kind == "sequence" and ds.x_pool.shape == (40, 1, 4)
    np.savez(tmp_path / "amb.npz", x_train=np.zeros((4, 3, 5, 3), np.uint8), y_train=np.arange(4),
             x_test=np.zeros((2, 3, 5, 3), np.uint8), y_test=np.arange(2))
    with pytest.raises(PrivdynError, match="set dataset.options.layout"):
        load_dataset("npz", options={"path": str(tmp_path / "amb.npz")})
    ds = load_dataset("npz", options={"path": str(tmp_path / "amb.npz"), "layout": "nhwc"})
    assert ds.x_pool.shape == (4, 3, 3, 5)


# ----- CLI, the example configs and the preparation script ------------------------------------
def test_datasets_command_shows_where_and_found(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from privdyn import cli
    from privdyn.cli import app

    # the console is made at import, before COLUMNS is set: widen it so no cell wraps
    monkeypatch.setattr(cli.out, "width", 400)
    d = shared("mnist_train20k_test10k_uint8.npz", 10, 10)
    write_idx_folder(tmp_path / "mnist", d, False)
    res = CliRunner().invoke(app, ["datasets", "--data-root", str(tmp_path)], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    lines = {ln.split("│")[1].strip(): ln for ln in res.output.splitlines() if ln.count("│") > 3}
    assert f"found: {tmp_path / 'mnist'}" in lines["mnist"] and "not found" in lines["cifar10"]
    assert "ready" in lines["mnist1d"] and "dataset.options.path" in lines["npz"]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "location30"])
def test_example_configs_validate(name):
    cfg = load_config(REPO / "examples" / f"{name}.yaml")
    assert cfg.dataset.name == name and cfg.dataset.root is None and cfg.training.n_models == 16


def test_prepare_script_makes_a_data_root(tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"shared data {SHARED} is absent")
    subprocess.run([sys.executable, str(REPO / "examples" / "prepare_shared_data.py"), str(tmp_path),
                    "--source", str(SHARED), "--limit", "60"], check=True, capture_output=True)
    for name, file in (("mnist", "mnist_train20k_test10k_uint8.npz"),
                       ("fashion_mnist", "fashion_mnist_train20k_test10k_uint8.npz")):
        ds, d = load_dataset(name, root=str(tmp_path)), shared(file, 60, 60)
        assert np.array_equal(ds.y_pool, d["y_train"]) and ds.x_pool.shape == (60, 1, 28, 28)
    x, y = read_batches(tmp_path / "cifar-10-batches-py", ("data_batch_1", "data_batch_5", "test_batch"), "labels", 10)
    d = shared("cifar10_jpegq75_train10k_test10k_uint8.npz", 60, 60)
    assert np.array_equal(x, np.concatenate([d["x_train"][:12], d["x_train"][48:], d["x_test"]]).transpose(0, 3, 1, 2))
    loc = load_dataset("location30", root=str(tmp_path))
    assert loc.n_pool + len(loc.y_test) == 60
