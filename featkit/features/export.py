"""features.h5 as plain arrays and tables: numpy (``.npz``), pandas (``.parquet``, ``.csv``).

The HDF5 file stays the contract between featkit's steps; these are for
everything else (a notebook, another classifier, a spreadsheet). Every row is
exported, also unreadable images (``status`` says which rows hold features).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from featkit.errors import FeatkitError
from featkit.outputs import check_output_file

if TYPE_CHECKING:
    import pandas as pd

class Readable(Protocol):
    """What export reads of a features file (:class:`~featkit.features.store.FeatureFile` has it all)."""

    path: Path

    def __len__(self) -> int: ...
    @property
    def gap(self) -> np.ndarray: ...
    @property
    def labels(self) -> np.ndarray: ...
    @property
    def classes(self) -> list[str]: ...
    @property
    def paths(self) -> list[str]: ...
    @property
    def splits(self) -> np.ndarray: ...
    @property
    def sizes(self) -> np.ndarray: ...
    @property
    def status(self) -> np.ndarray: ...
    @property
    def box(self) -> np.ndarray: ...
    @property
    def attributes(self) -> np.ndarray | None: ...
    def boxes_of(self) -> list[np.ndarray]: ...

EXPORT_SUFFIXES = (".npz", ".parquet", ".csv")


def to_numpy(features: Readable) -> dict[str, np.ndarray]:
    """Plain arrays of a features file, one per name (the names of an exported ``.npz``).

    ``features`` (N, K) float32 GAP, ``labels`` (N,) (-1: none), ``classes`` (C,), ``paths`` (N,),
    ``splits`` (N, F) (one column per fold), ``sizes`` (N, 2) width, height, ``status`` (N,) (1: ok),
    ``boxes`` (N, 4) the main box x0 y0 x1 y1 (NaN: none), and every box as ``all_boxes`` (M, 4) with
    its row in ``all_boxes_image`` (M,); ``attributes`` (N, C) for multi-label data.
    """
    every = features.boxes_of()
    owners = np.concatenate([np.full(len(b), i, np.int64) for i, b in enumerate(every)] or [np.zeros(0, np.int64)])
    stacked = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in every] or [np.zeros((0, 4), np.float32)])
    out = {
        "features": np.array(features.gap), "labels": np.array(features.labels, dtype=np.int64),
        "classes": np.array(features.classes, dtype=str), "paths": np.array(features.paths, dtype=str),
        "splits": np.array(features.splits, dtype=str).reshape(len(features), -1),
        "sizes": np.array(features.sizes), "status": np.array(features.status), "boxes": np.array(features.box),
        "all_boxes": stacked, "all_boxes_image": owners,
    }
    if features.attributes is not None:
        out["attributes"] = np.array(features.attributes)
    return out


def to_pandas(features: Readable) -> pd.DataFrame:
    """One row per image: path, label, class, split (``split_<f>`` per fold when there are several),
    width, height, status, the main box (x0..y1, NaN: none), then the K features ``f0..f<K-1>`` (float32)."""
    pd = _pandas()
    arrays = to_numpy(features)
    n, k = arrays["features"].shape
    labels = arrays["labels"]
    classes = arrays["classes"]
    columns: dict[str, Any] = {
        "path": arrays["paths"], "label": labels,
        "class": np.where(labels >= 0, classes[np.clip(labels, 0, max(len(classes) - 1, 0))], ""),
    }
    splits = arrays["splits"]
    for f in range(splits.shape[1]):
        columns["split" if splits.shape[1] == 1 else f"split_{f}"] = splits[:, f]
    columns.update(width=arrays["sizes"][:, 0], height=arrays["sizes"][:, 1], status=arrays["status"])
    for j, name in enumerate(("x0", "y0", "x1", "y1")):
        columns[name] = arrays["boxes"][:, j]
    table = pd.DataFrame(columns)
    gap = pd.DataFrame(arrays["features"], columns=[f"f{j}" for j in range(k)])
    return pd.concat([table, gap], axis=1)


def export(features: Readable, output: str | Path, overwrite: bool = False) -> Path:
    """Write ``features`` to ``output``: ``.npz`` (:func:`to_numpy`), ``.parquet`` or ``.csv`` (:func:`to_pandas`)."""
    path = check_output_file(output, overwrite=overwrite, suffixes=EXPORT_SUFFIXES, example="features.npz",
                             inputs=[features.path])
    suffix = path.suffix.lower()
    partial = path.with_name(f".{path.name}.partial{suffix}")  # replaced at the end: a failure leaves no half file
    try:
        if suffix == ".npz":
            arrays: dict[str, Any] = dict(to_numpy(features))
            np.savez(partial, **arrays)
        elif suffix == ".parquet":
            _parquet_engine()
            to_pandas(features).to_parquet(partial, index=False)
        else:
            to_pandas(features).to_csv(partial, index=False)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise FeatkitError("tables need pandas: pip install 'featkit[export]' (or export to a .npz file)") from None
    return pd


def _parquet_engine() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise FeatkitError("parquet files need pyarrow: pip install 'featkit[export]' (or use .csv or .npz)") from None
