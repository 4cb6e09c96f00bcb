"""Checkpoint arrays (zarr v3, one chunk per checkpoint, crc32c): round trips, atomic
replacement, and every kind of damage found on read with the file and checkpoint named."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays as np_arrays

from privdyn.store import arrays
from privdyn.store.integrity import CorruptArtifact


def chunk(path, t, ndim):
    return path / "c" / "/".join([str(t)] + ["0"] * (ndim - 1))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(np_arrays(st.sampled_from([np.float32, np.float64, np.bool_, np.int64]),
                 st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 5))))
def test_round_trip_is_exact_for_any_shape_and_dtype(tmp_path_factory, x):
    path = tmp_path_factory.mktemp("a") / "x.zarr"
    arrays.save_array(path, x)
    a = arrays.open_array(path)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(a), x)  # NaN and inf included
    for t in range(x.shape[0]):
        np.testing.assert_array_equal(a[t], x[t])


def test_query_and_type_views_read_what_numpy_would(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 4, 5, 2)).astype(np.float32)
    arrays.save_array(tmp_path / "s.zarr", x)
    a = arrays.open_array(tmp_path / "s.zarr")
    v = a.at_query(1)
    assert v.shape == (3, 4, 5)
    np.testing.assert_array_equal(v[2], x[2, ..., 1])
    np.testing.assert_array_equal(v[0, :, 3], x[0, :, 3, 1])
    np.testing.assert_array_equal(np.asarray(v), x[..., 1])
    np.testing.assert_array_equal(a[1, ..., 0], x[1, ..., 0])
    f64 = a.as_type(np.float64)
    assert f64[0].dtype == np.float64 and np.array_equal(f64[0], x[0].astype(np.float64))


def test_a_failed_write_keeps_the_old_array_and_leaves_no_temp(tmp_path):
    path = tmp_path / "s.zarr"
    arrays.save_array(path, np.ones((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="killed"), arrays.create_array(path, (2, 3), np.float32) as out:
        out[0] = 5
        assert np.asarray(arrays.open_array(path)).sum() == 6  # still the old one
        raise RuntimeError("killed mid-write")
    assert np.asarray(arrays.open_array(path)).sum() == 6
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_an_unfinished_array_is_never_published(tmp_path):
    with pytest.raises(RuntimeError, match="never written"), \
            arrays.create_array(tmp_path / "s.zarr", (3, 2), np.float32) as out:
        out[0] = 1  # checkpoints 1 and 2 missing
    assert not (tmp_path / "s.zarr").exists()


def test_replacing_an_array_changes_its_digest_only_when_its_content_changes(tmp_path):
    path = tmp_path / "s.zarr"
    arrays.save_array(path, np.arange(6.0).reshape(2, 3))
    d1 = arrays.array_digest(path)
    arrays.save_array(path, np.arange(6.0).reshape(2, 3))
    assert arrays.array_digest(path) == d1
    arrays.save_array(path, np.arange(6.0).reshape(2, 3) + 1)
    assert arrays.array_digest(path) != d1


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "delete", "metadata"])
def test_damage_is_found_on_read_and_names_the_checkpoint(tmp_path, damage):
    path = tmp_path / "s.zarr"
    x = np.random.default_rng(1).normal(size=(4, 3, 50)).astype(np.float32)
    arrays.save_array(path, x)
    target = chunk(path, 2, 3)
    data = target.read_bytes()
    if damage == "flip":
        target.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])
    elif damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "delete":
        target.unlink()
    else:
        (path / "zarr.json").unlink()
    if damage in ("delete", "metadata"):  # found when opening: zarr would read a missing chunk as fill
        with pytest.raises(CorruptArtifact, match="s.zarr"):
            arrays.open_array(path)
    else:
        a = arrays.open_array(path)
        np.testing.assert_array_equal(a[1], x[1])  # the intact checkpoints still read
        with pytest.raises(CorruptArtifact, match="checkpoint index 2"):
            a[2]
        with pytest.raises(CorruptArtifact, match="s.zarr"):
            np.asarray(a)
    with pytest.raises(CorruptArtifact):
        arrays.verify_array(path)


def test_query_views_take_numpys_ellipsis_anywhere(tmp_path):
    x = np.random.default_rng(2).normal(size=(3, 4, 5, 2)).astype(np.float32)
    arrays.save_array(tmp_path / "s.zarr", x)
    v = arrays.open_array(tmp_path / "s.zarr").at_query(1)
    view = x[..., 1]
    for key in [(..., 3), (1, ...), (0, ..., 2), (..., 2, 3), (...,)]:
        np.testing.assert_array_equal(v[key], view[key], err_msg=str(key))


def test_a_verified_array_is_decoded_again_after_it_changes(tmp_path):
    path = tmp_path / "s.zarr"
    arrays.save_array(path, np.ones((2, 3, 40), np.float32))
    arrays.verify_array(path)
    target = chunk(path, 1, 3)
    data = target.read_bytes()
    target.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])  # same size; new mtime
    with pytest.raises(CorruptArtifact, match="checkpoint index 1"):
        arrays.verify_array(path)


def test_scores_in_memory_decodes_once_never_serves_a_rewritten_array_and_respects_the_budget(tmp_path):
    from privdyn.store.arrays import CheckpointArray, save_array
    from privdyn.store.rundir import RunDir

    run = RunDir(tmp_path)
    first = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    save_array(run.score_path("a"), first)
    save_array(run.score_path("b"), first + 1)
    assert isinstance(run.load_scores("a"), CheckpointArray)  # outside the block: streamed
    with run.scores_in_memory(budget=8 * first.size):  # room for one attack's float64 scores
        kept = run.load_scores("a")
        assert isinstance(kept, np.ndarray) and kept is run.load_scores("a")  # read once, then shared
        np.testing.assert_array_equal(kept, first.astype(np.float64))
        with pytest.raises(ValueError):
            kept[0, 0, 0] = 1.0  # read-only: one reader cannot change what the others see
        assert isinstance(run.load_scores("b"), CheckpointArray)  # over the budget: streamed
        save_array(run.score_path("a"), 2 * first)  # rewritten (e.g. rescored) inside the block
        np.testing.assert_array_equal(np.asarray(run.load_scores("a")), 2 * first.astype(np.float64))
    assert isinstance(run.load_scores("a"), CheckpointArray)  # the block keeps nothing afterwards
