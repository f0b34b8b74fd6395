"""Reader registry: one class per official layout, looked up by manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from featkit.data.base import Dataset, DatasetReader, load_manifest
from featkit.errors import FeatkitError

_READERS: dict[str, type[DatasetReader]] = {}

R = TypeVar("R", bound=type[DatasetReader])


def register_reader(cls: R) -> R:
    """Class decorator; refuses a second reader with the same name."""
    if cls.name in _READERS:
        raise ValueError(f"a dataset reader named {cls.name!r} is already registered")
    _READERS[cls.name] = cls
    return cls


def reader_names() -> list[str]:
    return sorted(_READERS)


def open_dataset(name: str, root: str | Path) -> Dataset:
    """The dataset ``name`` (a manifest name) read from ``root``."""
    manifest = load_manifest(name)
    try:
        reader_cls = _READERS[manifest.reader]
    except KeyError:
        raise FeatkitError(
            f"data_manifests/{name}.toml names reader {manifest.reader!r}, which featkit does not have"
        ) from None
    return Dataset(reader_cls(root, manifest))
