"""15-Scene (Lazebnik et al. 2006): ``ROOT/<Category>/<image>.jpg``, 15 folders of grayscale JPEGs.

The dataset ships no split: the standard protocol (in the manifest) draws 100
training images per class at random and tests on the rest.
"""

from __future__ import annotations

from featkit.data.folder import ClassFolderReader
from featkit.data.registry import register_reader


@register_reader
class Scene15(ClassFolderReader):
    """Classes are the sorted category folder names (the dataset has no official order)."""

    name = "scene15"
