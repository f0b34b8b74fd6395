"""Caltech-256: ``256_ObjectCategories/NNN.name/NNN_NNNN.jpg``; ``257.clutter`` is not a class."""

from __future__ import annotations

import re
from typing import ClassVar

from featkit.data.folder import ClassFolderReader
from featkit.data.registry import register_reader
from featkit.errors import FeatkitError

_NUMBERED = re.compile(r"^(\d+)\.(.+)$")


@register_reader
class Caltech256(ClassFolderReader):
    """Classes are the ``NNN.name`` folders ordered by NNN (the official numbering), without clutter."""

    name = "caltech256"
    images_dir = "256_ObjectCategories"
    excluded: ClassVar[frozenset[str]] = frozenset({"257.clutter"})

    def class_folder_order(self, names: list[str]) -> list[str]:
        numbers: dict[str, int] = {}
        for name in names:
            match = _NUMBERED.match(name)
            if match is None:
                raise FeatkitError(
                    f"{self.base / name}: not a Caltech-256 class folder; expected 'NNN.name' folders only "
                    f"under {self.base}"
                )
            numbers[name] = int(match.group(1))
        return sorted(names, key=lambda n: (numbers[n], n))
