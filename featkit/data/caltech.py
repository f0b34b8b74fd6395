"""Caltech-101: ``101_ObjectCategories/<class>/image_NNNN.jpg`` and optional
``Annotations/<folder>/annotation_NNNN.mat`` boxes (``box_coord`` = top, bottom,
left, right; 1-based, inclusive)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from featkit.data.base import Box, Manifest
from featkit.data.folder import ClassFolderReader
from featkit.data.registry import register_reader
from featkit.errors import FeatkitError

# The annotation folders of four classes are named differently from their image folders.
ANNOTATION_FOLDERS = {
    "airplanes": "Airplanes_Side_2",
    "Faces": "Faces_2",
    "Faces_easy": "Faces_3",
    "Motorbikes": "Motorbikes_16",
}


def load_mat(path: Path) -> dict[str, np.ndarray]:
    """A MATLAB v5 file's variables; an unreadable file is one FeatkitError naming it."""
    import scipy.io  # imported here: only the layouts with .mat files pay for it

    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise FeatkitError(f"{path}: MATLAB v7.3 file; re-save it as v7 (save -v7) so scipy can read it") from exc
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, IndexError, OSError) as exc:  # IndexError: scipy < 1.11
        raise FeatkitError(f"{path}: not a readable .mat file ({exc})") from exc


@register_reader
class Caltech101(ClassFolderReader):
    """Classes are the sorted image folders without ``BACKGROUND_Google``: the standard fixed order."""

    name = "caltech101"
    images_dir = "101_ObjectCategories"
    excluded: ClassVar[frozenset[str]] = frozenset({"BACKGROUND_Google"})

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        super().__init__(root, manifest)
        annotations = self.root / "Annotations"
        self.annotations: Path | None = annotations if annotations.is_dir() else None

    def boxes_for(self, class_name: str, image: Path) -> tuple[Box, ...]:
        """The box of ``annotation_NNNN.mat`` converted to pixel corners; none without one."""
        if self.annotations is None or not image.stem.startswith("image_"):
            return ()
        folder = ANNOTATION_FOLDERS.get(class_name, class_name)
        mat = self.annotations / folder / f"annotation_{image.stem[len('image_'):]}.mat"
        if not mat.is_file():
            return ()
        coords = np.asarray(load_mat(mat).get("box_coord", np.empty(0))).astype(np.float64).ravel()
        if coords.size != 4:
            raise FeatkitError(f"{mat}: expected a 'box_coord' variable [top, bottom, left, right]")
        top, bottom, left, right = (float(v) for v in coords)
        return ((left - 1.0, top - 1.0, right, bottom),)
