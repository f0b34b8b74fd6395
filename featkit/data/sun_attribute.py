"""SUN Attribute (Patterson & Hays 2012): ``images/<path>.jpg`` and ``SUNAttributeDB/``
``images.mat`` (cell ``images``), ``attributes.mat`` (cell ``attributes``, 102 names) and
``attributeLabels_continuous.mat`` (``labels_cv``: images x attributes, fraction of 3 votes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featkit.data.base import DatasetReader, ImageRecord, Manifest
from featkit.data.caltech import load_mat
from featkit.data.registry import register_reader
from featkit.errors import FeatkitError

POSITIVE_THRESHOLD = 0.5
"""An attribute is present when ``labels_cv >= 0.5``. Each value is the fraction of three
annotators who saw it (0, 1/3, 2/3 or 1), so this is "at least 2 of 3 votes"."""


def cell_strings(mat: dict[str, np.ndarray], key: str, path: Path) -> list[str]:
    """A MATLAB cell array of strings as a Python list, in storage order."""
    if key not in mat:
        raise FeatkitError(f"{path}: has no variable '{key}'; is this the SUNAttributeDB file?")
    strings: list[str] = []
    for cell in np.asarray(mat[key]).ravel():
        value = np.asarray(cell)
        while value.dtype == object and value.size == 1:
            value = np.asarray(value.ravel()[0])
        if value.dtype.kind != "U":
            raise FeatkitError(f"{path}: '{key}' is not a cell array of strings")
        strings.append("".join(str(v) for v in value.ravel()).strip())
    return strings


@register_reader
class SUNAttribute(DatasetReader):
    """Multi-label: classes are the 102 attributes, ``attributes`` the binary targets, label -1.

    The dataset ships no split, and per-class draws do not apply to multi-label
    images, so :meth:`official_splits` draws a seeded 50/50 image split per fold
    (``protocol.folds`` folds, fold f seeded with ``protocol.seed + f``).
    """

    name = "sun_attribute"

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        super().__init__(root, manifest)
        self.require("images", folder=True)
        self.images_mat = self.require("SUNAttributeDB/images.mat")
        self.attributes_mat = self.require("SUNAttributeDB/attributes.mat")
        self.labels_mat = self.require("SUNAttributeDB/attributeLabels_continuous.mat")

    def classes(self) -> list[str]:
        return cell_strings(load_mat(self.attributes_mat), "attributes", self.attributes_mat)

    def records(self) -> list[ImageRecord]:
        images = cell_strings(load_mat(self.images_mat), "images", self.images_mat)
        n_attributes = len(self.classes())
        labels_mat = load_mat(self.labels_mat)
        if "labels_cv" not in labels_mat:
            raise FeatkitError(f"{self.labels_mat}: has no variable 'labels_cv'")
        votes = np.asarray(labels_mat["labels_cv"], dtype=np.float64)
        if votes.shape != (len(images), n_attributes):
            raise FeatkitError(
                f"{self.labels_mat}: labels_cv is {votes.shape}, expected {len(images)} images x "
                f"{n_attributes} attributes to match images.mat and attributes.mat"
            )
        present = (votes >= POSITIVE_THRESHOLD).astype(np.float64)
        return [
            ImageRecord(path="images/" + path.replace("\\", "/").lstrip("/"), attributes=tuple(row.tolist()))
            for path, row in zip(images, present)
        ]

    def official_splits(self, records: list[ImageRecord]) -> np.ndarray:
        protocol = self.manifest.protocol
        n = len(records)
        table = np.full((n, max(1, protocol.folds)), "test", dtype=object)
        for fold in range(table.shape[1]):
            order = np.random.default_rng(protocol.seed + fold).permutation(n)
            table[order[: n // 2], fold] = "train"
        return table
