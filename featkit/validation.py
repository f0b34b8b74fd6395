"""The one validation layer for the files featkit reads (features.h5, svm.h5, crops, weights, Caffe).

A file from disk is untrusted: another version may have written it, a disk may
have damaged it, a person may have crafted it. Every reader takes its arrays
and attributes through these helpers, so that a wrong schema version, a
missing array, a wrong dtype or shape, a string where a number belongs, or a
NaN/inf where a finite number is needed becomes one :class:`FeatkitError`
line naming the file, the entry and what was expected -- before anything is
allocated from the sizes the file declares, and before any value is used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from featkit.errors import FeatkitError

MAX_DECLARED_ELEMENTS = 1 << 31
"""Largest element count a reader allocates for one array a file declares (2**31: 8 GiB of float32),
far above any real features or weight array, far below what a crafted header can claim."""


def damaged(path: str | Path, what: str, fix: str = "recreate it") -> FeatkitError:
    """The one wording of a damaged input file."""
    return FeatkitError(f"{path} is damaged: {what}; {fix}")


def require_schema(attrs: Mapping[str, Any], supported: int, path: str | Path, fix: str) -> int:
    """The file's ``schema_version`` as an int in 1..``supported``, else FeatkitError (a newer featkit wrote it,
    or the value is garbage)."""
    value = attrs.get("schema_version")
    number = as_int(value)
    if number is None or number < 1:
        raise damaged(path, f"schema_version is {_show(value)}, not a version number", fix)
    if number > supported:
        raise FeatkitError(f"{path} has schema_version {number}, newer than this featkit reads ({supported}); "
                           "upgrade featkit or recreate the file with this version")
    return number


def as_int(value: Any) -> int | None:
    """``value`` as an int when it is one (numpy ints and integral floats included), else None."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def int_attr(attrs: Mapping[str, Any], key: str, path: str | Path, *, low: int = 0, high: int | None = None,
             fix: str = "recreate it") -> int:
    """Attribute ``key`` as an int in ``low..high``, else FeatkitError naming it."""
    value = attrs.get(key)
    number = as_int(value)
    if number is None or number < low or (high is not None and number > high):
        span = f"{low}..{high}" if high is not None else f"{low} or more"
        raise damaged(path, f"attribute {key} is {_show(value)}, expected an integer {span}", fix)
    return number


def read_array(
    h5: h5py.Group, name: str, path: str | Path, *, kinds: str = "fiu", shape: tuple[int | None, ...] | None = None,
    finite: bool = False, fix: str = "recreate it",
) -> np.ndarray:
    """Dataset ``name`` read after checking it exists, its dtype kind (``kinds``: numpy kind letters), its
    shape (None entries: any length) and its size; with ``finite`` every value must be finite."""
    if name not in h5 or not isinstance(h5[name], h5py.Dataset):
        raise damaged(path, f"{name} is missing", fix)
    dataset = h5[name]
    if dataset.dtype.kind not in kinds:
        raise damaged(path, f"{name} holds {dataset.dtype} values, expected numbers", fix)
    if shape is not None and (len(dataset.shape) != len(shape)
                              or any(w is not None and w != have for w, have in zip(shape, dataset.shape))):
        want = "(" + ", ".join("n" if w is None else str(w) for w in shape) + ")"
        raise damaged(path, f"{name} has shape {dataset.shape}, expected {want}", fix)
    if dataset.size > MAX_DECLARED_ELEMENTS:
        raise damaged(path, f"{name} declares {dataset.size} values, more than featkit reads in one array", fix)
    try:
        values = np.asarray(dataset[()])
    except (OSError, ValueError, TypeError) as exc:
        raise damaged(path, f"{name} cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                      fix) from None
    if finite and values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise damaged(path, f"{name} holds {bad} NaN or infinite value{'s' if bad > 1 else ''}", fix)
    return values


def read_strings(h5: h5py.Group, name: str, path: str | Path, *, length: int | None = None,
                 fix: str = "recreate it") -> list[str]:
    """1-D text dataset ``name`` (``length`` entries when given), else FeatkitError naming it."""
    if name not in h5 or not isinstance(h5[name], h5py.Dataset):
        raise damaged(path, f"{name} is missing", fix)
    dataset = h5[name]
    if dataset.dtype.kind not in "SOU" or dataset.ndim != 1 or (length is not None and dataset.shape[0] != length):
        want = f"{length} names" if length is not None else "a list of names"
        raise damaged(path, f"{name} is {dataset.dtype} of shape {dataset.shape}, expected {want}", fix)
    try:
        return [str(v) for v in dataset.asstr()[()]]
    except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise damaged(path, f"{name} cannot be read as text ({type(exc).__name__})", fix) from None


def finite_numbers(values: Any, what: str, *, positive: bool = False) -> list[float]:
    """``values`` as finite floats (positive when asked), else FeatkitError naming ``what``."""
    try:
        numbers = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        raise FeatkitError(f"{what} must be numbers, got {_show(values)}") from None
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in numbers):
        kind = "finite positive" if positive else "finite"
        raise FeatkitError(f"{what} must be {kind} numbers, got {_show(values)}")
    return numbers


def _show(value: Any) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 40 else text[:37] + "..."
