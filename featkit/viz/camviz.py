"""Pictures of SVM-weighted CAMs for ``featkit cam``: overlays, top-5 strips, a gallery, raw maps.

Each picture is drawn on the ORIGINAL image (read from the dataset root), with
the CAM upsampled to it, the paper's box in red and the ground-truth boxes in
green. Raw maps are saved at map resolution (h, w) with their class indices:
they are what the box code needs, and a few KB per image instead of a full
image's worth.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError

from featkit.cam.boxer import CamBoxer, single_threaded_torch
from featkit.cam.calibration import Calibration, class_agnostic
from featkit.cam.maps import CamOptions
from featkit.data.images import read_picture
from featkit.errors import FeatkitError
from featkit.features.extractor import Progress
from featkit.features.integrity import require_same_images, require_usable
from featkit.features.mapsource import MapSource, dataset_root
from featkit.features.store import FeatureFile
from featkit.linear.classifier import TOP_K, LinearClassifier, top_classes
from featkit.outputs import atomic_output, check_output_folder, h5_image, write_bytes
from featkit.viz.overlay import (
    GalleryEntry,
    cam_strip,
    display_size,
    drawn_cams,
    overlay_figure,
    save_picture,
    scale_box,
    write_gallery,
)

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("gt", "top1", "top5")
"""Which CAMs to draw; any other value of ``which`` is taken as a class name."""
SAVE_RAW: tuple[str, ...] = ("none", "npy", "h5")


def _image_paths(features: FeatureFile, rows: np.ndarray, root: str | Path | None) -> list[Path]:
    """Original image files of ``rows``, all checked before any work starts."""
    base = dataset_root(features, root)
    if base is None:
        raise FeatkitError(
            f"the images of {features.path} are not at its recorded dataset root "
            f"{features.attrs.get('dataset_root')!s}; pass root=DATASET_ROOT"
        )
    paths = features.paths
    files = [base / paths[int(r)] for r in rows]
    for file in files:
        if not file.is_file():
            raise FeatkitError(f"image {file} not found; pass root=DATASET_ROOT pointing at the dataset folder")
    require_same_images(features, base, rows)  # CAMs drawn on other photos would be silently wrong
    return files


def _class_columns(
    which: str, features: FeatureFile, classifier: LinearClassifier, rows: np.ndarray, top: np.ndarray
) -> np.ndarray:
    """Classifier rows to draw per image: (n, 1) or (n, T) for top-5."""
    if which == "top5":
        return top
    if which == "top1" or (which == "gt" and class_agnostic(features, classifier, rows)):
        return top[:, :1]  # the backbone head on other classes or unlabelled images: its top-1 class
    if which == "gt":
        labels = features.labels[rows]
        if (labels < 0).any():
            raise FeatkitError(f"some selected images of {features.path} have no label; use which='top1' instead of 'gt'")
        return classifier.class_mapping(features)[labels][:, None]
    return np.full((len(rows), 1), classifier.class_index(which), dtype=np.int64)


def _file_stem(row: int, path: str) -> str:
    """Row number plus the image's name, safe for any file system."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:60]
    return f"{row:06d}_{name}"


_PICTURE = re.compile(r"\d{6}_[A-Za-z0-9._-]*\.png")
_RAW_FILES = ("cams.npy", "cams_classes.npy", "cams_rows.npy", "cams.h5")


def _clear_previous_gallery(out: Path) -> None:
    """Remove the pictures and raw maps of an earlier gallery in ``out`` (it has an index.html), so the new
    page is not surrounded by stale pictures; files named otherwise (the user's own) stay."""
    if not (out / "index.html").is_file():
        return
    stale = [p for p in out.iterdir() if p.is_file() and (_PICTURE.fullmatch(p.name) or p.name in _RAW_FILES)]
    for path in stale:
        path.unlink()
    if stale:
        log.info("removed %d files of the previous gallery in %s", len(stale), out)


def render_cams(
    features: FeatureFile,
    classifier: LinearClassifier,
    rows: Sequence[int] | np.ndarray,
    out_dir: str | Path,
    *,
    which: str = "gt",
    cam_options: CamOptions = CamOptions(),
    root: str | Path | None = None,
    save_raw: str = "none",
    batch: int = 32,
    alpha: float = 0.5,
    device: str = "auto",
    progress: Progress | None = None,
    methods: Sequence[str] = (),
    calibrations: Mapping[str, Calibration] | None = None,
) -> Path:
    """Draw CAMs of ``rows`` into ``out_dir`` (PNG per image + index.html); returns the page.

    ``which``: "gt" (the true class), "top1", "top5" (a strip of the five
    best classes, paper Fig. 4) or a class name of the classifier. ``save_raw``
    "npy" writes ``cams.npy`` (n, T, h, w) with ``cams_classes.npy`` (n, T) and
    ``cams_rows.npy`` (n); "h5" writes the same into ``cams.h5`` with names.
    ``progress(done, total)`` is called after every batch of pictures.
    Two or more ``methods`` draw one strip per image instead: one column per
    method (first class of ``which``), ground truth green, predicted box red,
    each boxed under ``cam_options`` with its own method.
    ``calibrations`` (by method name, chosen on the train split) replace
    ``cam_options`` for their method and carry a learned method's model.
    """
    if save_raw not in SAVE_RAW:
        raise FeatkitError(f"unknown save_raw {save_raw!r}; use one of {', '.join(SAVE_RAW)}")
    if which not in MODES:
        classifier.class_index(which)  # a clear error for unknown names before any work
    require_usable(features)
    idx = features.check_rows(rows)
    files = _image_paths(features, idx, root)
    out = check_output_folder(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous_gallery(out)

    source = MapSource.of(features, root, device=device)
    chosen = dict(calibrations or {})

    def boxer_of(name: str) -> CamBoxer:
        if name in chosen:
            return chosen[name].boxer(classifier.weight)
        return CamBoxer(classifier.weight, replace(cam_options, method=name))

    boxer = boxer_of(cam_options.method)
    scores = classifier.decision_function(features.gap[idx])
    top = top_classes(scores, TOP_K)
    columns = _class_columns(which, features, classifier, idx, top)
    position = {int(r): i for i, r in enumerate(idx)}
    all_boxes = features.boxes_of()
    paths, labels, names, sizes = features.paths, features.labels, classifier.classes, features.sizes
    upright = features.attrs.get("orientation") == "exif"

    entries: list[GalleryEntry] = []
    if len(methods) > 1:
        boxers = [boxer_of(name) for name in methods]
        if progress:
            progress(0, idx.size)
        for chunk, conv in source.batches(idx, batch):
            pos = np.array([position[int(r)] for r in chunk])
            per_method = [b.row_cams(source, chunk, conv, columns[pos][:, :1])[:, 0] for b in boxers]
            frames = source.frames(chunk)
            with single_threaded_torch():
                for j, row in enumerate(chunk):
                    full = (int(sizes[row][0]), int(sizes[row][1]))
                    image = _open(files[int(pos[j])], upright, full)
                    frame = None if frames is None else frames[j]
                    drawn = [drawn_cams(b, cams[j][None], full, image.size, frame) for b, cams in zip(boxers, per_method)]
                    truth = features.classes[int(labels[row])] if labels[row] >= 0 else "?"
                    cls = names[int(columns[pos[j], 0])]
                    picture = cam_strip(image, [d[0][0] for d in drawn], list(methods), [d[1][0] for d in drawn],
                                        f"true: {truth}; map of {cls}", alpha,
                                        [scale_box(tuple(g), drawn[0][2]) for g in all_boxes[row]])
                    target = save_picture(picture, out / f"{_file_stem(int(row), paths[row])}.png")
                    entries.append(GalleryEntry(target, f"{paths[row]} (true: {truth}; methods {', '.join(methods)})"))
            if progress:
                progress(len(entries), idx.size)
        return write_gallery(out / "index.html", entries,
                             f"Methods {', '.join(methods)} on {features.path.name}, weights {classifier.source}")

    raw_cams: list[np.ndarray] = []
    if progress:
        progress(0, idx.size)
    for chunk, maps in boxer.batches(source, idx, batch):
        pos = np.array([position[int(r)] for r in chunk])
        cams = boxer.row_cams(source, chunk, maps, columns[pos])  # (n, T, h, w)
        frames = source.frames(chunk)
        if save_raw != "none":
            raw_cams.append(cams)
        with single_threaded_torch():
            for j, row in enumerate(chunk):
                i = int(pos[j])
                truth = features.classes[int(labels[row])] if labels[row] >= 0 else "?"
                titles = [f"{names[c]} {scores[i, c]:.2f}" for c in columns[i]]
                full = (int(sizes[row][0]), int(sizes[row][1]))
                picture = _picture(boxer, _open(files[i], upright, full), full, cams[j], titles, f"true: {truth}",
                                   all_boxes[row], which == "top5", alpha, None if frames is None else frames[j])
                target = save_picture(picture, out / f"{_file_stem(int(row), paths[row])}.png")
                entries.append(GalleryEntry(target, f"{paths[row]} (true: {truth}; {', '.join(titles)})"))
        if progress:
            progress(len(entries), idx.size)

    if save_raw != "none":
        _save_raw(out, save_raw, np.concatenate(raw_cams), columns, idx, names, [paths[int(r)] for r in idx])
    title = f"CAMs ({which}) of {features.path.name}, weights {classifier.source}"
    return write_gallery(out / "index.html", entries, title)


def _picture(
    boxer: CamBoxer,
    image: Image.Image,
    full: tuple[int, int],
    cams: np.ndarray,
    titles: list[str],
    image_title: str,
    gt_boxes: np.ndarray,
    strip: bool,
    alpha: float,
    frame: np.ndarray | None = None,
) -> Image.Image:
    """One image's (T, h, w) CAMs drawn on it (``image``: the picture shown, of original size ``full``): a
    single overlay, or a strip for several classes."""
    shown, boxes, scale = drawn_cams(boxer, cams, full, image.size, frame)
    if strip:
        return cam_strip(image, shown, titles, boxes, image_title=image_title, alpha=alpha)
    return overlay_figure(image, shown[0], boxes[0], [scale_box(tuple(b), scale) for b in gt_boxes], titles[0], alpha)


def _open(path: Path, exif: bool, full: tuple[int, int]) -> Image.Image:
    try:
        return read_picture(path, exif, display_size(full))
    except (OSError, ValueError, UnidentifiedImageError) as exc:
        raise FeatkitError(f"cannot read image {path} ({exc}); check root=DATASET_ROOT") from exc


def _save_raw(out: Path, kind: str, cams: np.ndarray, columns: np.ndarray, rows: np.ndarray,
              names: list[str], paths: list[str]) -> None:
    """Map-resolution CAMs with the classes and rows they belong to."""
    cams = cams.astype(np.float32, copy=False)
    if kind == "npy":
        for name, values in (("cams", cams), ("cams_classes", columns.astype(np.int64)),
                             ("cams_rows", rows.astype(np.int64))):
            with atomic_output(out / f"{name}.npy", values.nbytes) as tmp, tmp.open("wb") as handle:
                np.save(handle, values)
        return
    text = h5py.string_dtype("utf-8")

    def build(h5: h5py.File) -> None:
        h5.create_dataset("cams", data=cams, compression="gzip", compression_opts=1)
        h5.create_dataset("classes", data=columns.astype(np.int64))
        h5.create_dataset("rows", data=rows.astype(np.int64))
        h5.create_dataset("class_names", data=np.array(names, dtype=object), dtype=text)
        h5.create_dataset("paths", data=np.array(paths, dtype=object), dtype=text)
        h5.attrs["layout"] = "cams (n, T, h, w) float32 = sum_k w_k^c f_k at map resolution; classes (n, T)"

    write_bytes(out / "cams.h5", h5_image(build))
