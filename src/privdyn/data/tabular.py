"""Arrays from npz and CSV files: the tabular benchmarks and the generic ``npz`` dataset.

An npz file holds ``x_train, y_train, x_test, y_test``, or ``x, y``, or ``features, labels`` (labels
may be one-hot rows, as in the Purchase-100 and Texas-100 npz copies). A CSV file has the label in
its first column and the features after it, with or without a header row. A file without a test
split is split into pool and test by a seeded permutation.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from privdyn.data.base import Dataset
from privdyn.data.prepare import (
    class_indices,
    features_dataset,
    image_dataset,
    seeded_split,
)
from privdyn.data.roots import Location, missing_file
from privdyn.errors import PrivdynError

KEY_SETS = (("x_train", "y_train", "x_test", "y_test"), ("x", "y"), ("features", "labels"))
TEST_FRACTION = 0.2
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


def read_npz(path: Path) -> Arrays:
    """(x, y, x_test, y_test) from an npz file (no test split: None, None); never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = next((ks for ks in KEY_SETS if set(ks) <= set(z.files)), None)
            if keys is None:
                raise PrivdynError(f"{path} holds arrays {sorted(z.files)}; expected "
                                   f"{' or '.join('/'.join(ks) for ks in KEY_SETS)}. Rename them.")
            arrays = [z[k] for k in keys]
    except PrivdynError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise PrivdynError(f"{path} is not a readable npz file ({err}); write it with numpy.savez.") from None
    return (arrays[0], arrays[1], arrays[2], arrays[3]) if len(arrays) == 4 else (arrays[0], arrays[1], None, None)


def read_csv(path: Path) -> Arrays:
    """(features, labels, None, None) from a CSV file with the label in the first column."""
    import pandas as pd

    try:
        with path.open() as f:
            first = f.readline().strip().split(",")
        header = 0 if any(not _is_number(v) for v in first) else None
        table = pd.read_csv(path, header=header)
        values = table.to_numpy()
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise PrivdynError(f"{path} is not a readable CSV file ({err}).") from None
    if values.ndim != 2 or values.shape[1] < 2 or values.dtype.kind not in "iuf":
        raise PrivdynError(f"{path} must hold numbers: a label column, then at least one feature column "
                           f"(got {values.shape} of {values.dtype}).")
    short = np.flatnonzero(table.isna().any(axis=1).to_numpy())
    if len(short):
        row = int(short[0])
        filled = int(table.iloc[row].notna().sum())
        raise PrivdynError(f"{path}: line {row + 1 + (header == 0)} has {filled} of {values.shape[1]} fields (a short "
                           f"row or an empty value; {len(short)} such rows). Every row needs the label and all "
                           "features: fix or drop those rows.")
    return values[:, 1:], values[:, 0], None, None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_table(path: Path) -> Arrays:
    """An npz file (by its zip magic) or else a CSV file."""
    with path.open("rb") as f:
        magic = f.read(2)
    return read_npz(path) if magic == b"PK" else read_csv(path)


def labelled_splits(path: Path, n_test: int | None, seed: int, num_classes: int | None,
                    test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Pool and test arrays with class-index labels, split by seed when the file has no test split."""
    x, y, x_test, y_test = read_table(path)
    y = class_indices(y, num_classes, str(path))
    if len(x) != len(y):
        raise PrivdynError(f"{path}: {len(x)} feature rows but {len(y)} labels")
    if x_test is None:
        x, y, x_test, y_test = seeded_split(x, y, n_test, seed, test_fraction)
    else:
        assert y_test is not None  # read together with x_test
        y_test = class_indices(y_test, num_classes, f"{path} (test labels)")
        if len(x_test) != len(y_test) or x_test.shape[1:] != x.shape[1:]:
            raise PrivdynError(f"{path}: x_test {x_test.shape} does not match y_test {y_test.shape} "
                               f"or the training features {x.shape}")
    k = num_classes or int(max(y.max(), y_test.max())) + 1
    return x, y, x_test, y_test, k


def tabular_location(name: str, original: str, get: str) -> Location:
    """Where tabular dataset ``name`` is looked for: ROOT/NAME.npz, ROOT/NAME.csv or ROOT/NAME/``original``;
    ``get`` says how to obtain it."""
    return Location(name, (f"{name}.npz", f"{name}.csv", f"{name}/{original}"), missing_file, get)


LOCATION30 = tabular_location(
    "location30", "bangkok", "location30.npz (x: [n, 446] binary, y: 30 classes) or the original 'bangkok' "
    "CSV of the Location dataset of Shokri et al. 2017 (label first)")
PURCHASE100 = tabular_location(
    "purchase100", "dataset_purchase", "purchase100.npz (features/labels, as in privacytrustlab/datasets) or "
    "the original 'dataset_purchase' CSV of Shokri et al. 2017 (label first)")
TEXAS100 = tabular_location(
    "texas100", "texas100.csv", "texas100.npz (features/labels, as in privacytrustlab/datasets) or a CSV "
    "with the label first and the 6,169 binary features after it")
_TABULAR = {"location30": (LOCATION30, 30), "purchase100": (PURCHASE100, 100), "texas100": (TEXAS100, 100)}


def _tabular(name: str, n_pool: int | None, n_test: int | None, seed: int, options: dict, root: Path) -> Dataset:
    loc, k = _TABULAR[name]
    path = loc.find(root, options)
    x, y, x_test, y_test, k = labelled_splits(path, n_test, seed, k, float(options.get("test_fraction", TEST_FRACTION)))
    if x.ndim != 2:
        raise PrivdynError(f"{path}: {name} features must be a matrix [n, D], got {x.shape}")
    return features_dataset(name, "tabular", x, y, x_test, y_test, n_pool, n_test, seed, k,
                            str(options.get("normalise", "global")))


def load_location30(n_pool: int | None, n_test: int | None, seed: int, options: dict, root: Path) -> Dataset:
    """Location-30 (Foursquare check-ins): 446 binary features, 30 classes."""
    return _tabular("location30", n_pool, n_test, seed, options, root)


def load_purchase100(n_pool: int | None, n_test: int | None, seed: int, options: dict, root: Path) -> Dataset:
    """Purchase-100 (shopping histories): 600 binary features, 100 classes."""
    return _tabular("purchase100", n_pool, n_test, seed, options, root)


def load_texas100(n_pool: int | None, n_test: int | None, seed: int, options: dict, root: Path) -> Dataset:
    """Texas-100 (hospital discharges): 6,169 binary features, 100 classes."""
    return _tabular("texas100", n_pool, n_test, seed, options, root)


NPZ = Location("npz", (), missing_file, "an npz file with x_train, y_train, x_test, y_test (or x, y)")
_LAYOUTS = ("nchw", "nhwc")


def load_npz(n_pool: int | None, n_test: int | None, seed: int, options: dict, root: Path) -> Dataset:
    """Your own arrays from ``dataset.options.path``.

    The kind follows the feature shape: ``[n, D]`` tabular, ``[n, H, W]`` or ``[n, H, W, C]`` /
    ``[n, C, H, W]`` images (``options.layout`` nhwc/nchw when the channel axis is ambiguous);
    ``options.kind: sequence`` reads ``[n, L]`` or ``[n, C, L]`` as sequences. ``options.num_classes``
    overrides the number of classes (default: the largest label + 1).
    """
    path = NPZ.find(root, options)
    given_k = options.get("num_classes")
    x, y, x_test, y_test, k = labelled_splits(path, n_test, seed, int(given_k) if given_k else None,
                                              float(options.get("test_fraction", TEST_FRACTION)))
    kind = options.get("kind") or ("tabular" if x.ndim == 2 else "image")
    if kind == "image":
        x, x_test = (_nchw(a, str(options.get("layout", "")), path) for a in (x, x_test))
        return image_dataset("npz", x, y, x_test, y_test, n_pool, n_test, seed, k)
    if kind == "sequence" and x.ndim in (2, 3):
        x, x_test = (a[:, None] if a.ndim == 2 else a for a in (x, x_test))
    elif kind != "tabular" or x.ndim != 2:
        raise PrivdynError(f"{path}: features of shape {x.shape} do not fit dataset.options.kind={kind!r}; "
                           "use tabular for [n, D], sequence for [n, L] or [n, C, L], image for images")
    default = "feature" if kind == "tabular" else "global"
    return features_dataset("npz", "sequence" if kind == "sequence" else "tabular", x, y, x_test, y_test,
                            n_pool, n_test, seed, k, str(options.get("normalise", default)))


def _nchw(x: np.ndarray, layout: str, path: Path) -> np.ndarray:
    """Images as [n, C, H, W], from [n, H, W], [n, H, W, C] or [n, C, H, W]."""
    if layout and layout not in _LAYOUTS:
        raise PrivdynError(f"dataset.options.layout={layout!r}; use nchw or nhwc")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise PrivdynError(f"{path}: image arrays must be [n, H, W], [n, H, W, C] or [n, C, H, W], got {x.shape}")
    first, last = x.shape[1] in (1, 3, 4), x.shape[3] in (1, 3, 4)
    if not layout:
        if first == last:
            raise PrivdynError(f"{path}: cannot tell the channel axis of images {x.shape}; "
                               "set dataset.options.layout to nchw or nhwc")
        layout = "nchw" if first else "nhwc"
    return x if layout == "nchw" else x.transpose(0, 3, 1, 2)
