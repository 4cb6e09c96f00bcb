import numpy as np
import pytest

from privdyn.store import atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.npy"
    atomic.save_npy(target, np.arange(5))
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("killed mid-write")
    assert np.array_equal(np.load(target), np.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.npy.crc", "a.npy"]  # the file and its checksum


def test_npz_round_trip_without_pickle(tmp_path):
    atomic.save_npz(tmp_path / "x.npz", a=np.ones(3), b=np.zeros((2, 2), bool))
    out = atomic.load_npz(tmp_path / "x.npz")
    assert out["a"].sum() == 3 and out["b"].dtype == bool


@pytest.mark.parametrize("compress", [False, True])
def test_npz_round_trip_of_every_kind_of_array(tmp_path, compress):
    arrays = {"f": np.random.default_rng(0).normal(size=(30, 8)), "i": np.arange(7, dtype=np.int64),
              "b": np.array([[True, False]]), "h": np.ones(3, np.float16), "scalar": np.float64(2.5),
              "empty": np.zeros((0, 4)), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3))}
    atomic.save_npz(tmp_path / "x.npz", compress=compress, **arrays)
    back = atomic.load_npz(tmp_path / "x.npz")
    assert sorted(back) == sorted(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == np.asarray(value).dtype and np.array_equal(back[name], value), name
    with np.load(tmp_path / "x.npz", allow_pickle=False) as plain:  # a plain numpy reader opens it too
        assert np.array_equal(plain["f"], arrays["f"])
    with pytest.raises(ValueError):
        atomic.save_npz(tmp_path / "o.npz", compress=compress, o=np.array([{"a": 1}], dtype=object))


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError):
        atomic.save_npy(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os

    atomic.write_text(tmp_path / "r.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "r.txt").stat().st_mode & 0o777 == 0o666 & ~mask
