"""Which scored rows are images a model was fitted on: by row in the same image list, by content in any list.

An SVM and a calibrated box threshold (with the map a learned method fits)
remember the images they were fitted on: their rows, the sha256 of the image
list those rows index, and each image's content fingerprint (file size and a
hash of its first 64 KiB, recorded at extraction: ``images/fingerprint``).
Rows are compared only when the scored file has the same image list; the
fingerprints are compared whatever the list, so the same images listed again
(another layout, other paths, renamed splits) are found too. Inside one
image list, a scored row whose content equals a DIFFERENT fitted row is the
dataset repeating an image across its own splits: counted, not refused (an
official protocol keeps its official splits).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from featkit.errors import FeatkitError
from featkit.features.store import FeatureFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FittedImages:
    """The images something was fitted on: ``rows`` of the list with ``images_sha256``, and their fingerprints.

    ``rows`` None: unknown (an older file); ``fingerprints`` may be empty (none recorded).
    """

    rows: np.ndarray | None
    images_sha256: str | None
    fingerprints: tuple[str, ...] = ()

    @classmethod
    def of(cls, features: FeatureFile, rows: Sequence[int] | np.ndarray) -> FittedImages:
        """The record of ``rows`` of ``features``: rows, image-list hash, fingerprints ('' left out)."""
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        prints = tuple(str(f) for f in features.fingerprints[idx] if f)
        return cls(idx, features.images_sha256, prints)


@dataclass(frozen=True)
class Overlap:
    """Scored rows that are fitted images: ``by_row`` (same list), ``by_content`` (another list, same content),
    and ``repeats`` (same list, another row with the same content: the dataset repeats an image)."""

    by_row: np.ndarray
    by_content: np.ndarray
    repeats: np.ndarray

    @property
    def refused(self) -> np.ndarray:
        """The rows to refuse: fitted rows and fitted content reached through another image list."""
        return np.union1d(self.by_row, self.by_content)


def overlap(fitted: FittedImages, features: FeatureFile, rows: Sequence[int] | np.ndarray,
            fitted_rows: np.ndarray | None = None) -> Overlap:
    """Which of ``rows`` of ``features`` are ``fitted`` images.

    ``fitted_rows``: the fitted rows in THIS file when the caller knows them
    otherwise (an older svm.h5's split and fold); by default they are
    ``fitted.rows`` when the image lists are the same.
    """
    idx = np.asarray(rows, dtype=np.int64).reshape(-1)
    same_list = fitted.rows is not None and fitted.images_sha256 == features.images_sha256
    if fitted_rows is None and same_list:
        fitted_rows = fitted.rows
    by_row = np.intersect1d(idx, fitted_rows) if fitted_rows is not None else np.empty(0, np.int64)
    known = set(fitted.fingerprints) - {""}
    if known:
        mine = features.fingerprints[idx]
        matched = idx[np.array([bool(f) and f in known for f in mine], dtype=bool)]
    else:
        matched = np.empty(0, np.int64)
    matched = np.setdiff1d(matched, by_row)
    if fitted_rows is not None and same_list:
        return Overlap(by_row, np.empty(0, np.int64), matched)
    return Overlap(by_row, matched, np.empty(0, np.int64))


def refuse_fitted(fitted: FittedImages, features: FeatureFile, rows: Sequence[int] | np.ndarray, what: str,
                  who: str, fix: str, content_fix: str, fitted_rows: np.ndarray | None = None) -> Overlap:
    """FeatkitError when any of ``rows`` (``what``) is an image ``who`` was fitted on; ``fix`` says what to do
    about fitted rows, ``content_fix`` about fitted content reached through another image list.

    Repeats inside the same image list are logged, not refused; the overlap is returned.
    """
    found = overlap(fitted, features, rows, fitted_rows)
    n = len(np.asarray(rows).reshape(-1))
    if found.by_row.size:
        raise FeatkitError(f"{found.by_row.size} of the {n} {what} are {who}; {fix}")
    if found.by_content.size:
        example = int(found.by_content[0])
        raise FeatkitError(
            f"{found.by_content.size} of the {n} {what} are {who} by their content (same image fingerprint, "
            f"listed again under other paths or splits, e.g. row {example}: {features.paths[example]}); {content_fix}"
        )
    if found.repeats.size:
        log.warning("%d of the %d %s repeat the content of %s under other paths in %s (the dataset lists these "
                    "images twice)", found.repeats.size, n, what, who, features.path)
    return found
