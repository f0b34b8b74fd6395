"""The features.h5 contract: writer (resumable, append-by-batch) and streaming reader.

Layout (schema 1):

- root attrs: provenance (``featkit_version``, ``schema_version``, ``backbone``,
  ``weights``, ``weights_sha256``, ``feature_layer``, ``pooling``, ``input_size``,
  ``mean``, ``std``, ``resize``, ``decode``, ``precision``, ``dataset``,
  ``dataset_root``, ``created``), progress (``rows_done``, ``complete``).
- ``images/path`` (N) utf-8 relative to the dataset root, ``images/label`` (N),
  ``images/split`` (N, F) one column per fold, ``images/size`` (N, 2) width,
  height of the original, ``images/box`` (N, 4) the main box or NaN,
  ``images/boxes`` (M, 4) with ``images/boxes_image`` (M) for every box,
  ``images/status`` (N) 0 pending / 1 ok / 2 unreadable, ``images/error`` (N),
  ``images/attributes`` (N, C) for multi-label datasets.
- crops files (paper Table 4, ``featkit crops``) add ``images/crop_box`` (N, 4)
  float64, the box each row's features were extracted from, (x0, y0, x1, y1)
  in original pixels (``images/box`` keeps the ground truth), and root attrs
  ``crop`` (one-line summary), ``crop_method`` (``cam`` or ``gt``) and, for CAM
  boxes, ``crop_svm`` (path), ``crop_svm_sha256``, ``crop_svm_fold``,
  ``crop_threshold``, ``crop_normalization``, ``crop_cam_weights``, ``crop_upsample``, ``crop_close``,
  ``crop_scales``, ``crop_layer``, ``crop_enhance``, ``crop_threshold_chosen_on``.
- ``images/fingerprint`` (N) file size and hash of the first 64 KiB of each image
  (:func:`check_images`).
- ``classes`` (C), ``features/gap`` (N, K) float32, ``features/maps``
  (N, K, h, w) float16 chunked per image and compressed (optional),
  ``head/weight`` (C0, K), ``head/bias`` (C0), ``head/classes`` (C0).

Every array is allocated at its full size when the file is created and rows
are filled in order; ``rows_done`` moves only after a batch is flushed, so an
interrupted run resumes at the first unfinished batch and never loses or
duplicates rows. A new file's layout is built in memory and written through a
temp file renamed into place (:func:`featkit.outputs.write_bytes`), so a run
killed or a disk filled while creating it leaves no unreadable file behind. A writer holds ``<name>.lock`` (:mod:`featkit.features.lock`),
so a second writer is refused. A full disk never costs committed rows: a batch
that may not fit is refused before it is written, and after a write that fails
anyway nothing more reaches the file (HDF5 would otherwise flush half-updated
metadata over the committed state and leave a file that no longer opens).

A shard of a multi-process extraction (:mod:`featkit.features.distributed`) is such a
file for its block of rows, with the additive root attributes ``shard_rank``,
``shard_world_size``, ``shard_start``, ``shard_stop`` (its rows in the whole
job) and ``shard_total``; merging the shards gives the file one process writes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from featkit.data.base import ImageRecord
from featkit.data.fingerprint import file_fingerprint
from featkit.errors import FeatkitError
from featkit.features.lock import OutputLock, remove_stale_temps, temp_name, writer_pid
from featkit.features.schema import (
    ABSENT_MEANS,
    RESUME_KEYS,
    SCHEMA_VERSION,
    STATUS_OK,
    STATUS_PENDING,
    Provenance,
    plain,
)
from featkit.outputs import check_output_file, h5_image, room_for, size_text, write_bytes
from featkit.validation import MAX_DECLARED_ELEMENTS, as_int, damaged, finite_numbers, int_attr, require_schema

_STR = h5py.string_dtype("utf-8")
log = logging.getLogger(__name__)

SPACE_SLACK_BYTES = 16 << 10
"""Room kept free beyond a batch's raw size for HDF5's own growth (chunk index nodes, heaps, headers)."""

PARTIAL_SUFFIX = ".partial"
"""A new file's layout is written to ``<name>.partial`` and renamed to ``<name>`` once complete."""


@dataclass(frozen=True)
class Head:
    """The backbone's own linear classifier, stored so CAMs work before any SVM exists."""

    weight: np.ndarray
    bias: np.ndarray
    classes: Sequence[str]


def _box_array(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    main = np.full((len(records), 4), np.nan, dtype=np.float32)
    all_boxes: list[tuple[float, float, float, float]] = []
    owners: list[int] = []
    for i, record in enumerate(records):
        if record.boxes:
            main[i] = record.boxes[0]
        for box in record.boxes:
            all_boxes.append(box)
            owners.append(i)
    return main, np.asarray(all_boxes, dtype=np.float32).reshape(-1, 4), np.asarray(owners, dtype=np.int64)


def _reason(exc: OSError) -> str:
    """The system's words for a write error (HDF5 wraps errno in a long message)."""
    if exc.errno:
        return os.strerror(exc.errno)
    text = str(exc)
    for code in (28, 27, 122, 5):  # ENOSPC, EFBIG, EDQUOT, EIO
        if os.strerror(code).lower() in text.lower() or f"errno = {code}" in text:
            return os.strerror(code)
    return text.splitlines()[0] if text else type(exc).__name__


def _check_fingerprints(h5: h5py.File, root: Path, rows: np.ndarray, path: Path) -> None:
    """Refuse when the images under ``root`` at ``rows`` are not the ones extracted (size + head hash)."""
    if "images/fingerprint" not in h5 or rows.size == 0:
        return
    stored = h5["images/fingerprint"].asstr()[:]
    paths = h5["images/path"].asstr()[:]
    bad = [int(r) for r in rows if stored[r] and file_fingerprint(root / paths[r]) != stored[r]]
    if bad:
        raise FeatkitError(
            f"{len(bad)} of {rows.size} images under {root} differ from those extracted into {path} "
            f"(e.g. row {bad[0]}: {paths[bad[0]]}, by size or content); give root= the dataset the features "
            "came from"
        )


def check_images(features: FeatureFile, root: str | Path, rows: Sequence[int] | np.ndarray) -> None:
    """Refuse (FeatkitError) when the images under ``root`` at ``rows`` are not those ``features`` was
    extracted from: file size and a hash of the first 64 KiB, recorded at extraction (files written
    before fingerprints were recorded are not checked)."""
    _check_fingerprints(features.h5, Path(root), np.asarray(rows, dtype=np.int64).reshape(-1), features.path)


_NUMERIC = {"images/label": 1, "images/size": 2, "images/status": 1, "images/box": 2, "features/gap": 2}
"""Numeric tables and their number of dimensions (a string or a wrong rank there breaks every reader)."""
_TEXT = ("images/path", "images/split", "images/error", "classes")


def layout_problems(h5: h5py.File) -> list[str]:
    """Arrays whose dtype, length or width disagrees with ``n_images`` / ``channels``, and a bad run state
    (the file's attributes already checked by :class:`FeatureFile`)."""
    a = {k: plain(v) for k, v in h5.attrs.items()}
    n, k = int(a.get("n_images", -1)), int(a.get("channels", -1))
    problems = []
    for name in ("images/path", "images/label", "images/split", "images/size", "images/status", "images/error",
                 "images/box", "classes", "features/gap"):
        if name not in h5 or not isinstance(h5[name], h5py.Dataset):
            problems.append(f"{name} is missing")
    if problems:
        return problems
    for name, ndim in _NUMERIC.items():
        if h5[name].dtype.kind not in "fiu" or h5[name].ndim != ndim:
            problems.append(f"{name} is {h5[name].dtype} of {h5[name].ndim} dimensions, expected numbers in {ndim}")
    for name in _TEXT:
        if h5[name].dtype.kind not in "SOU" or h5[name].ndim != (2 if name == "images/split" else 1):
            problems.append(f"{name} is {h5[name].dtype} of {h5[name].ndim} dimensions, expected text")
    if "head" in h5:
        problems += _head_problems(h5["head"], k)
    if problems:
        return problems
    for name in ("images/path", "images/label", "images/split", "images/size", "images/status", "images/error",
                 "images/box"):
        if h5[name].shape[0] != n:
            problems.append(f"{name} has {h5[name].shape[0]} rows, the file says {n} images")
    for name, width in (("images/size", 2), ("images/box", 4)):
        if h5[name].shape[1:] != (width,):
            problems.append(f"{name} is {h5[name].shape}, expected ({n}, {width})")
    if h5["features/gap"].shape != (n, k):
        problems.append(f"features/gap is {h5['features/gap'].shape}, expected ({n}, {k}) (images x channels)")
    if "images/fingerprint" in h5 and (not isinstance(h5["images/fingerprint"], h5py.Dataset)
                                       or h5["images/fingerprint"].dtype.kind not in "SOU"
                                       or h5["images/fingerprint"].shape != (n,)):
        problems.append(f"images/fingerprint is not {n} texts (one per image)")
    if "features/maps" in h5 and (h5["features/maps"].ndim != 4 or tuple(h5["features/maps"].shape[:2]) != (n, k)):
        problems.append(f"features/maps is {h5['features/maps'].shape}, expected ({n}, {k}, h, w)")
    if ("images/boxes" in h5) != ("images/boxes_image" in h5):
        problems.append("images/boxes and images/boxes_image must be there together")
    elif "images/boxes" in h5 and (h5["images/boxes"].ndim != 2
                                 or h5["images/boxes"].shape[1:] != (4,)
                                 or h5["images/boxes"].shape[0] != h5["images/boxes_image"].shape[0]):
        problems.append("images/boxes is not (M, 4) or differs in length from images/boxes_image")
    done = int(a.get("rows_done", 0))
    if not 0 <= done <= n:
        problems.append(f"rows_done {done} lies outside 0..{n}")
    elif a.get("complete") and done != n:
        problems.append(f"the file says complete but only {done} of {n} rows are done")
    return problems


def _head_problems(group: h5py.Group, k: int) -> list[str]:
    """The backbone head's weight (C0, K), bias (C0) and classes (C0)."""
    for name in ("weight", "bias", "classes"):
        if name not in group or not isinstance(group[name], h5py.Dataset):
            return [f"head/{name} is missing"]
    weight, bias, classes = group["weight"], group["bias"], group["classes"]
    if weight.dtype.kind not in "fiu" or weight.ndim != 2 or weight.shape[1] != k:
        return [f"head/weight is {weight.dtype} {weight.shape}, expected numbers (classes, {k})"]
    c0 = weight.shape[0]
    if bias.dtype.kind not in "fiu" or bias.shape != (c0,) or classes.dtype.kind not in "SOU" or classes.shape != (c0,):
        return [f"head/bias {bias.shape} and head/classes {classes.shape} must both be ({c0},)"]
    return []


class FeatureWriter:
    """Creates or resumes a features file; ``write_batch`` fills the next rows in order."""

    def __init__(self, path: str | Path, handle: h5py.File) -> None:
        self.path = Path(path)
        self.h5 = handle
        self._lock: OutputLock | None = None
        self._broken = False

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: str | Path,
        provenance: Provenance,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        splits: np.ndarray,
        head: Head | None = None,
        overwrite: bool = False,
        crop_boxes: np.ndarray | None = None,
        moved_root: bool = False,
    ) -> FeatureWriter:
        """Resume ``path`` when it holds an unfinished run of the same job, else create it.

        ``crop_boxes`` (N, 4): the box each row is extracted from, stored as ``images/crop_box``.
        Refuses (FeatkitError) to touch a file from another job unless ``overwrite``,
        and to resume from another dataset root unless ``moved_root`` (then the
        committed rows' image fingerprints must match the files under the new root).
        Holds ``<path>.lock`` until :meth:`close`: a second writer is refused.
        """
        path = check_output_file(path, existing="allow", example="features.h5")
        lock = OutputLock(path).acquire()
        try:
            remove_stale_temps(path, partial_suffix=PARTIAL_SUFFIX)
            if path.exists() and not overwrite:
                handle = cls._open_for_resume(path, provenance, records, crop_boxes=crop_boxes, moved_root=moved_root)
            else:
                handle = cls._create(path, provenance, records, classes, splits, head, crop_boxes)
            writer = cls(path, handle)
        except BaseException:
            lock.release()
            raise
        writer._lock = lock
        return writer

    @classmethod
    def _create(
        cls,
        path: Path,
        provenance: Provenance,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        splits: np.ndarray,
        head: Head | None,
        crop_boxes: np.ndarray | None = None,
    ) -> h5py.File:
        # The layout (megabytes: the head, the tables) is built in memory and written as plain bytes through a
        # temp file renamed into place: a run killed meanwhile leaves no half-written file at ``path``, and a full
        # disk is one clear error (HDF5 itself can crash when a write fails while it lays out a file).
        def build(handle: h5py.File) -> None:
            cls._create_layout(handle, provenance, records, classes, splits, head, crop_boxes)

        write_bytes(path, h5_image(build), prefix=temp_name(path))
        return cls._open_handle(path)

    @staticmethod
    def _open_handle(path: Path) -> h5py.File:
        """``path`` opened for writing rows, tuned so that a failed write cannot reach the committed state.

        No raw-data chunk cache (a batch's chunks are written during the write call, before any metadata)
        and no metadata evictions (metadata reaches the file only at the flush that commits a batch).
        """
        handle = h5py.File(path, "r+", rdcc_nbytes=0)
        config = handle.id.get_mdc_config()
        config.evictions_enabled = False
        config.incr_mode = 0  # H5C_incr__off
        config.flash_incr_mode = 0  # H5C_flash_incr__off
        config.decr_mode = 0  # H5C_decr__off
        handle.id.set_mdc_config(config)
        return handle

    @classmethod
    def is_complete(cls, path: str | Path, provenance: Provenance, records: Sequence[ImageRecord],
                    crop_boxes: np.ndarray | None = None) -> bool:
        """Whether ``path`` (which must exist) is a finished file of this job; FeatkitError if of another job.

        Read-only, so several processes may ask at once.
        """
        with cls._open_for_resume(Path(path), provenance, records, mode="r", crop_boxes=crop_boxes) as handle:
            return bool(handle.attrs["complete"])

    @staticmethod
    def _open_for_resume(
        path: Path, provenance: Provenance, records: Sequence[ImageRecord], mode: str = "r+",
        crop_boxes: np.ndarray | None = None,
        moved_root: bool = False,
    ) -> h5py.File:
        try:
            handle = FeatureWriter._open_handle(path) if mode == "r+" else h5py.File(path, mode)
        except OSError as exc:
            pid = writer_pid(path)
            if pid:
                raise FeatkitError(f"{path} is being written by another process (pid {pid}); wait for it to "
                                   "finish, then run again") from exc
            raise FeatkitError(
                f"{path} exists but cannot be opened for resuming ({exc}); "
                "move it away or pass overwrite=True to start again"
            ) from exc
        expected = provenance.attrs(len(records))
        for key in RESUME_KEYS:
            have = handle.attrs.get(key, ABSENT_MEANS.get(key))
            want = expected.get(key, ABSENT_MEANS.get(key))
            if key == "dataset_root" and (moved_root or have is None):
                continue  # files of older versions did not compare it; a moved root is checked below
            if have is None and want is not None and key in ABSENT_MEANS:
                have = ABSENT_MEANS[key]  # written before the key was recorded
            if plain(have) != plain(want):
                handle.close()
                hint = (" (if the dataset moved, pass moved_root=True to resume from the new root)"
                        if key == "dataset_root" else "")
                raise FeatkitError(
                    f"{path} holds features from another run ({key}: {plain(have)} there, {plain(want)} now)"
                    f"{hint}; choose another output, or pass overwrite=True to replace it"
                )
        stored = handle["images/path"].asstr()[:]
        if list(stored) != [r.path for r in records]:
            handle.close()
            raise FeatkitError(
                f"{path} lists other images than the dataset at this root; choose another output or pass overwrite=True"
            )
        stored_crops = handle["images/crop_box"][:] if "images/crop_box" in handle else None
        same_crops = (stored_crops is None and crop_boxes is None) or (
            stored_crops is not None and crop_boxes is not None
            and np.array_equal(stored_crops, np.asarray(crop_boxes, dtype=np.float64), equal_nan=True))
        if not same_crops:
            handle.close()
            raise FeatkitError(
                f"{path} holds features of other crop boxes than this run's; choose another output or pass "
                "overwrite=True to replace it"
            )
        root = str(expected.get("dataset_root", ""))
        if moved_root and mode == "r+" and plain(handle.attrs.get("dataset_root")) != root:
            try:
                done = int(handle.attrs["rows_done"])
                _check_fingerprints(handle, Path(root), np.arange(done), path)
            except BaseException:
                handle.close()
                raise
            log.info("%s: dataset moved from %s to %s; the %d committed rows match their images there",
                     path, plain(handle.attrs.get("dataset_root")), root, done)
            handle.attrs["dataset_root_before"] = str(plain(handle.attrs.get("dataset_root")))
            handle.attrs["dataset_root"] = root
            handle.flush()
        return handle

    @staticmethod
    def _create_layout(
        h5: h5py.File,
        provenance: Provenance,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        splits: np.ndarray,
        head: Head | None,
        crop_boxes: np.ndarray | None = None,
    ) -> None:
        n, k = len(records), provenance.channels
        h5.attrs.update(provenance.attrs(n))
        h5.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        h5.attrs["rows_done"] = 0
        h5.attrs["complete"] = False
        images = h5.create_group("images")
        images.create_dataset("path", data=np.array([r.path for r in records], dtype=object), dtype=_STR)
        images.create_dataset("label", data=np.array([r.label for r in records], dtype=np.int64))
        split_ds = images.create_dataset("split", data=np.asarray(splits, dtype=object).reshape(n, -1), dtype=_STR)
        split_ds.attrs["folds"] = split_ds.shape[1]
        images.create_dataset("size", shape=(n, 2), dtype=np.int32, fillvalue=0)
        main, every, owners = _box_array(records)
        images.create_dataset("box", data=main)
        images.create_dataset("boxes", data=every)
        images.create_dataset("boxes_image", data=owners)
        if crop_boxes is not None:
            crop = np.asarray(crop_boxes, dtype=np.float64)
            if crop.shape != (n, 4):
                raise ValueError(f"crop_boxes must be ({n}, 4), got {crop.shape}")
            images.create_dataset("crop_box", data=crop)
        images.create_dataset("status", shape=(n,), dtype=np.int8, fillvalue=STATUS_PENDING)
        images.create_dataset("error", shape=(n,), dtype=_STR)
        images.create_dataset("fingerprint", shape=(n,), dtype=_STR)
        if any(r.attributes is not None for r in records):
            attributes = np.array([r.attributes for r in records], dtype=np.float32)
            images.create_dataset("attributes", data=attributes)
        h5.create_dataset("classes", data=np.array(list(classes), dtype=object), dtype=_STR)
        features = h5.create_group("features")
        features.create_dataset("gap", shape=(n, k), dtype=np.float32, chunks=(max(1, min(n, 256)), k),
                                fillvalue=np.nan)
        if provenance.maps:
            mh, mw = provenance.map_size
            features.create_dataset("maps", shape=(n, k, mh, mw), dtype=np.float16, chunks=(1, k, mh, mw),
                                    compression="gzip", compression_opts=1, shuffle=True)
        if head is not None:
            group = h5.create_group("head")
            group.create_dataset("weight", data=np.asarray(head.weight, dtype=np.float32))
            group.create_dataset("bias", data=np.asarray(head.bias, dtype=np.float32))
            group.create_dataset("classes", data=np.array(list(head.classes), dtype=object), dtype=_STR)

    # ---------------------------------------------------------------- writing

    @property
    def rows_done(self) -> int:
        return int(self.h5.attrs["rows_done"])

    @property
    def n_images(self) -> int:
        return int(self.h5.attrs["n_images"])

    @property
    def complete(self) -> bool:
        return bool(self.h5.attrs["complete"])

    def write_batch(
        self,
        start: int,
        gap: np.ndarray,
        sizes: np.ndarray,
        status: np.ndarray,
        errors: Sequence[str],
        maps: np.ndarray | None = None,
        fingerprints: Sequence[str] | None = None,
    ) -> None:
        """Write rows ``start:start+len(gap)``, flush, then advance ``rows_done``.

        A batch that may not fit (free space, the file-size limit) is refused before
        any byte is written, and a write that fails anyway (another process filled
        the disk) cuts the file off from further writes so the last committed state
        stays on disk: in both cases FeatkitError, and a re-run resumes.
        """
        if self._broken:
            raise RuntimeError(f"{self.path}: a write failed; no further rows are written")
        if start != self.rows_done:
            raise RuntimeError(f"batch starts at row {start} but the file is at row {self.rows_done}")
        stop = start + len(gap)
        text = [e for e in errors if e] + list(fingerprints or [])
        need = (gap.nbytes + sizes.nbytes + status.nbytes + (0 if maps is None else maps.size * 2)
                + sum(len(t.encode()) + 16 for t in text))
        self._check_room(start, int(need * 1.05) + SPACE_SLACK_BYTES)
        try:
            self.h5["features/gap"][start:stop] = gap
            if maps is not None:
                self.h5["features/maps"][start:stop] = maps.astype(np.float16, copy=False)
            self.h5["images/size"][start:stop] = sizes
            self.h5["images/status"][start:stop] = status
            if any(errors):
                self.h5["images/error"][start:stop] = np.array(list(errors), dtype=object)
            if fingerprints is not None and "images/fingerprint" in self.h5:
                self.h5["images/fingerprint"][start:stop] = np.array(list(fingerprints), dtype=object)
            self.h5.flush()
            self.h5.attrs["rows_done"] = stop
            self.h5.flush()
        except OSError as exc:
            self._cut_off()
            raise FeatkitError(
                f"cannot write rows {start}..{stop} of {self.path} ({_reason(exc)}); stopped at the first failed "
                f"write, the {start} rows before are kept: free space (or raise the file-size limit) and run the "
                "same extraction again to resume"
            ) from exc

    def _check_room(self, start: int, need: int) -> None:
        """Refuse the next batch when ``need`` bytes may not fit on the disk or under the file-size limit."""
        room = room_for(self.path.parent, self.path.stat().st_size)
        if room < need:
            raise FeatkitError(
                f"{self.path}: no room for the next rows ({size_text(room)} left, {size_text(need)} needed, "
                f"counting the disk's free space and the file-size limit); the {start} rows written are kept: free "
                "space (or raise the file-size limit) and run the same extraction again to resume"
            )

    def _cut_off(self) -> None:
        """After a failed write: point the file's descriptor at /dev/null (read-only), so that HDF5 writes
        nothing more (no half-updated metadata over the committed state), not even when the file is closed."""
        self._broken = True
        try:
            fd = int(self.h5.id.get_vfd_handle())
            null = os.open(os.devnull, os.O_RDONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
        except (OSError, ValueError, TypeError, RuntimeError):
            log.warning("%s: could not detach the file after a failed write", self.path)

    def finish(self) -> None:
        if self.rows_done != self.n_images:
            raise RuntimeError(f"finish() at row {self.rows_done} of {self.n_images}")
        self.h5.attrs["complete"] = True
        self.h5.attrs["finished"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.h5.flush()

    def close(self) -> None:
        try:
            if self.h5.id.valid:
                if self._broken:
                    try:
                        self.h5.close()  # writes go to the read-only /dev/null descriptor and fail harmlessly
                    except Exception:  # noqa: BLE001 - the write error was reported already
                        pass
                else:
                    self.h5.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def padding_of(maps: np.ndarray) -> np.ndarray:
    """(n, h, w) int8 of NaN-padded maps (n, K, h, w): 1 on the padding, 0 on each row's valid extent.

    Variable-shape maps (``short-side``) sit top-left in the canvas, so the padding is the rows below and the
    columns right of the last cell that holds a number; a NaN inside that extent, or a row without any
    number, is damage, not padding.
    """
    valid = ~np.isnan(maps).all(axis=1)  # (n, h, w): cells with a number in some channel
    height = np.where(valid.any(axis=2).any(axis=1), valid.shape[1] - np.argmax(valid.any(axis=2)[:, ::-1], axis=1), 0)
    width = np.where(valid.any(axis=1).any(axis=1), valid.shape[2] - np.argmax(valid.any(axis=1)[:, ::-1], axis=1), 0)
    inside = ((np.arange(valid.shape[1])[None, :, None] < height[:, None, None])
              & (np.arange(valid.shape[2])[None, None, :] < width[:, None, None]))
    inside[height == 0] = True  # no number at all: the whole row is damage
    return (~inside).astype(np.int8)


class FeatureFile:
    """Read side of features.h5: small arrays eagerly, maps streamed by index."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FeatkitError(f"features file {self.path} does not exist; create it with extract")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as exc:
            pid = writer_pid(self.path)
            if pid:
                who = f"another process (pid {pid})" if pid > 0 else "another process"
                raise FeatkitError(f"{self.path} cannot be read now: {who} is writing it; wait for it to "
                                   "finish") from exc
            raise FeatkitError(f"{self.path} is not a readable HDF5 file ({exc}); re-run the extraction") from exc
        if "schema_version" not in self.h5.attrs or "features" not in self.h5:
            self.h5.close()
            raise FeatkitError(f"{self.path} is not a featkit features file (no schema_version); make one with extract")
        try:  # the attributes every reader sizes its work by; the arrays are checked by integrity.require_usable
            fix = "re-extract it (overwrite=True)"
            require_schema(self.h5.attrs, SCHEMA_VERSION, self.path, fix)
            for key in ("n_images", "channels", "rows_done"):
                int_attr(self.h5.attrs, key, self.path, high=MAX_DECLARED_ELEMENTS, fix=fix)
            if as_int(self.h5.attrs.get("channels")) == 0:
                raise damaged(self.path, "attribute channels is 0", fix)
            for key in ("mean", "std"):
                values = finite_numbers(self.h5.attrs.get(key, (0.0, 0.0, 0.0)), f"{self.path}: attribute {key}")
                if len(values) != 3:
                    raise damaged(self.path, f"attribute {key} holds {len(values)} values, expected 3", fix)
            problems = layout_problems(self.h5)
            if problems:
                raise damaged(self.path, problems[0], fix)
        except FeatkitError:
            self.h5.close()
            raise

    # Provenance and the small per-image tables are read once per open file (they never change
    # for a reader); the features and maps are read on demand, by rows.
    @cached_property
    def attrs(self) -> dict[str, Any]:
        return {k: plain(v) for k, v in self.h5.attrs.items()}

    @property
    def complete(self) -> bool:
        return bool(self.attrs["complete"])

    @property
    def geometry(self) -> tuple[str, str]:
        """(resize, tta) the images were fed with; files from before the geometry was recorded were warped."""
        return str(self.attrs.get("resize", "warp")), str(self.attrs.get("tta", "none"))

    def __len__(self) -> int:
        return int(self.attrs["n_images"])

    @cached_property
    def classes(self) -> list[str]:
        return list(self.h5["classes"].asstr()[:])

    @cached_property
    def paths(self) -> list[str]:
        return list(self.h5["images/path"].asstr()[:])

    @cached_property
    def images_sha256(self) -> str:
        """sha256 of the image list (paths in row order): whether row i means the same image in two files."""
        return hashlib.sha256("\n".join(self.paths).encode("utf-8")).hexdigest()

    @cached_property
    def fingerprints(self) -> np.ndarray:
        """(N,) object array of each image's content fingerprint (file size + head hash), '' where none was
        recorded (files from before fingerprints, rows not extracted): what says two rows are the same image
        whatever their paths."""
        if "images/fingerprint" not in self.h5:
            return self._read_only(np.full(len(self), "", dtype=object))
        return self._read_only(self.h5["images/fingerprint"].asstr()[:].astype(object))

    @cached_property
    def labels(self) -> np.ndarray:
        return self._read_only(self.h5["images/label"][:])

    @cached_property
    def splits(self) -> np.ndarray:
        return self._read_only(self.h5["images/split"].asstr()[:].astype(object))

    @cached_property
    def sizes(self) -> np.ndarray:
        return self._read_only(self.h5["images/size"][:])

    @cached_property
    def status(self) -> np.ndarray:
        return self._read_only(self.h5["images/status"][:])

    @cached_property
    def errors(self) -> list[str]:
        return list(self.h5["images/error"].asstr()[:])

    @cached_property
    def box(self) -> np.ndarray:
        return self._read_only(self.h5["images/box"][:])

    @cached_property
    def _boxes_per_image(self) -> list[np.ndarray]:
        owners = self.h5["images/boxes_image"][:]
        boxes = self.h5["images/boxes"][:]
        out = [np.zeros((0, 4), np.float32) for _ in range(len(self))]
        for i in np.unique(owners):
            out[int(i)] = boxes[owners == i]
        return out

    @cached_property
    def crop_box(self) -> np.ndarray | None:
        """(N, 4) box each row's features were extracted from (a crops file), else None."""
        return self._read_only(self.h5["images/crop_box"][:]) if "images/crop_box" in self.h5 else None

    def boxes_of(self) -> list[np.ndarray]:
        """Every ground-truth box, one (n_i, 4) array per image."""
        return list(self._boxes_per_image)

    @cached_property
    def attributes(self) -> np.ndarray | None:
        return self._read_only(self.h5["images/attributes"][:]) if "images/attributes" in self.h5 else None

    @property
    def has_maps(self) -> bool:
        return "features/maps" in self.h5

    @cached_property
    def gap(self) -> np.ndarray:
        """(N, K) float32 GAP features, read once (a shared, read-only array: copy before changing it)."""
        return self._read_only(self.h5["features/gap"][:])

    @staticmethod
    def _read_only(array: np.ndarray) -> np.ndarray:
        array.flags.writeable = False
        return array

    def require_complete(self) -> None:
        """Refuse a file whose extraction is still running or was interrupted."""
        if not self.complete:
            done = self.attrs.get("rows_done", 0)
            pid = writer_pid(self.path)
            if pid:
                who = f"another process (pid {pid})" if pid > 0 else "another process"
                raise FeatkitError(f"{self.path} is incomplete ({done} of {len(self)} images): {who} is "
                                   "writing it; wait for it to finish")
            raise FeatkitError(
                f"{self.path} is incomplete ({done} of {len(self)} images); "
                "re-run the same extraction to finish it"
            )

    def check_rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows as int64, refusing rows out of range or without a readable image."""
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise FeatkitError(f"no images selected in {self.path}; choose a split that has images")
        if idx.min() < 0 or idx.max() >= len(self):
            raise FeatkitError(f"row indices must lie in [0, {len(self)}) for {self.path}")
        bad = idx[self.status[idx] != STATUS_OK]
        if bad.size:
            raise FeatkitError(
                f"{bad.size} selected images of {self.path} were not extracted (e.g. row {int(bad[0])}); "
                "select rows with split_rows or re-run the extraction"
            )
        return idx

    def head(self) -> Head | None:
        if "head" not in self.h5:
            return None
        group = self.h5["head"]
        return Head(group["weight"][:], group["bias"][:], list(group["classes"].asstr()[:]))

    def maps(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Maps of the given rows as float32 (reads only those rows)."""
        if not self.has_maps:
            raise FeatkitError(f"{self.path} has no conv maps; re-extract with maps=True")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        stored = self.h5["features/maps"]
        if idx.size and idx[0] >= 0 and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
            raw = stored[int(idx[0]): int(idx[0]) + idx.size]  # a block of rows: one slice read
            inverse = None
        else:
            unique, inverse = np.unique(idx, return_inverse=True)  # h5py wants increasing, unique rows
            raw = stored[unique]
        # float16 -> float32 through torch: vectorised, several times faster than numpy's astype
        import torch  # here, not at the top: reading a file's tables (featkit info) needs no torch

        maps = torch.from_numpy(raw).float().numpy()
        bad = ~np.isfinite(maps)
        if bad.any() and self.geometry[0] == "short-side":
            bad &= padding_of(maps)[:, None] == 0
        if bad.any():
            read_rows = idx if inverse is None else np.unique(idx)
            rows = read_rows[bad.reshape(len(maps), -1).any(axis=1)]
            raise FeatkitError(f"{self.path} is damaged: features/maps holds NaN or inf in row {int(rows[0])} "
                               f"({self.paths[int(rows[0])]}); re-extract it (overwrite=True)")
        return maps if inverse is None else maps[inverse]

    def iter_maps(self, indices: Sequence[int] | np.ndarray, batch: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row indices, maps) in batches, so memory stays bounded."""
        idx = np.asarray(indices, dtype=np.int64)
        for lo in range(0, len(idx), batch):
            chunk = idx[lo : lo + batch]
            yield chunk, self.maps(chunk)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Plain arrays by name: features, labels, classes, paths, splits, sizes, status, boxes
        (:func:`featkit.features.export.to_numpy`)."""
        from featkit.features.export import to_numpy

        return to_numpy(self)

    def to_pandas(self) -> Any:
        """A pandas DataFrame, one row per image (:func:`featkit.features.export.to_pandas`; needs pandas)."""
        from featkit.features.export import to_pandas

        return to_pandas(self)

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.close()

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
