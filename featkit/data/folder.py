"""Generic layouts: a plain class-per-folder tree (``folder``) and a CSV list (``csv``).

Also the small helpers the official class-per-folder readers (Caltech, Scene15,
Event8, ...) share, so each of those stays a few lines.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import ClassVar

from featkit.data.base import IMAGE_SUFFIXES, Box, DatasetReader, ImageRecord, Manifest, read_text
from featkit.data.registry import register_reader
from featkit.errors import FeatkitError

log = logging.getLogger(__name__)


def is_image(path: Path) -> bool:
    """A visible entry named like an image (one of featkit's suffixes, any case).

    Not only regular files: a dangling symlink, a symlink loop or a folder named
    ``x.jpg`` is listed too, so that extraction names it (an unreadable image:
    one line under ``on_error='fail'``, status 2 and its error under ``'skip'``)
    instead of it vanishing from the dataset without a word.
    """
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """The image entries directly inside ``folder``, sorted by name (files of other types are skipped)."""
    return sorted((p for p in folder.iterdir() if is_image(p)), key=lambda p: p.name)


def subfolders(folder: Path) -> list[str]:
    """Names of the visible subfolders of ``folder``, in plain (case-sensitive) sorted order.

    A visible symlink that leads nowhere (dangling, or a loop) cannot be a class
    folder; it is named in a warning rather than skipped silently.
    """
    names = []
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_dir():
            names.append(p.name)
        elif p.is_symlink() and not p.exists():
            log.warning("skipped %s: a symlink that leads nowhere (dangling or a loop)", p)
    return sorted(names)


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, '/'-separated, as :class:`ImageRecord` wants."""
    return path.relative_to(root).as_posix()


class ClassFolderReader(DatasetReader):
    """``ROOT/<class>/<image>``: classes are the subfolders that hold images, sorted.

    Subclasses only change ``name`` and, where the official tree sits one level
    down, :attr:`images_dir`. A folder with no images is not a class, so stray
    folders (features, caches) do not shift the label indices.
    """

    images_dir: ClassVar[str] = ""
    """Folder under ROOT that holds the class folders ('' for ROOT itself)."""
    excluded: ClassVar[frozenset[str]] = frozenset()
    """Folder names that are not classes of the standard protocol."""

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        super().__init__(root, manifest)
        self.base = self.require(self.images_dir, folder=True) if self.images_dir else self.root
        self._tree: dict[str, list[Path]] | None = None

    def _class_images(self) -> dict[str, list[Path]]:
        """Class folder name -> its sorted images, in class order (listed once, cached)."""
        if self._tree is None:
            tree: dict[str, list[Path]] = {}
            for name in self.class_folder_order(subfolders(self.base)):
                if name in self.excluded:
                    continue
                images = image_files(self.base / name)
                if images:
                    tree[name] = images
            if not tree:
                raise FeatkitError(
                    f"{self.manifest.title}: no class folders with images under {self.base}; expected layout: "
                    + " ".join(self.manifest.layout.split())
                )
            self._tree = tree
        return self._tree

    def class_folder_order(self, names: list[str]) -> list[str]:
        """The fixed class order of the folder names; sorted unless a layout says otherwise."""
        return names

    def classes(self) -> list[str]:
        return list(self._class_images())

    def boxes_for(self, class_name: str, image: Path) -> tuple[Box, ...]:
        """Ground-truth boxes of one image; none in a plain tree."""
        return ()

    def records(self) -> list[ImageRecord]:
        return [
            ImageRecord(path=relative(image, self.root), label=label, boxes=self.boxes_for(name, image))
            for label, (name, images) in enumerate(self._class_images().items())
            for image in images
        ]


SPLIT_FOLDERS = ("train", "val", "valid", "validation", "test")
"""Folder names of a torchvision-style ``ROOT/<split>/<class>/<image>`` tree (compared lower-cased)."""


def split_folders(root: Path) -> list[str]:
    """The subfolders of ``root`` named like a split (train, val, test, ...) that hold class folders with images;
    empty unless one of them is ``train`` (a plain tree may have a class called ``test``)."""
    if not root.is_dir():
        return []
    found = [name for name in subfolders(root)
             if name.lower() in SPLIT_FOLDERS and any(image_files(root / name / c) for c in subfolders(root / name))]
    return found if "train" in [name.lower() for name in found] else []


@register_reader
class FolderTree(ClassFolderReader):
    """Any ``ROOT/<class>/<image>`` tree; a plain tree has no official class order, so: sorted.

    A torchvision-style tree ``ROOT/{train,val,test}/<class>/<image>`` (``ImageFolder`` per split) is read
    too: the split folder's name is each image's split (``valid``/``validation`` are ``val``), and the
    classes are the sorted union of every split's class folders, so a class missing from one split keeps
    its index.
    """

    name = "folder"

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        super().__init__(root, manifest)
        self.split_dirs = split_folders(self.root)

    def classes(self) -> list[str]:
        if not self.split_dirs:
            return super().classes()
        names: set[str] = set()
        for split in self.split_dirs:
            names.update(c for c in subfolders(self.root / split) if image_files(self.root / split / c))
        return sorted(names)

    def records(self) -> list[ImageRecord]:
        if not self.split_dirs:
            return super().records()
        index = {name: i for i, name in enumerate(self.classes())}
        records = []
        for split in self.split_dirs:
            label = "val" if split.lower() in ("valid", "validation") else split.lower()
            for name in subfolders(self.root / split):
                for image in image_files(self.root / split / name):
                    records.append(ImageRecord(path=relative(image, self.root), label=index[name], split=label))
        return records


_CSV_COLUMNS = ("path", "label", "split", "x0", "y0", "x1", "y1")
_CSV_SHAPES = {
    2: ("path", "label"),
    3: ("path", "label", "split"),
    6: ("path", "label", "x0", "y0", "x1", "y1"),
    7: _CSV_COLUMNS,
}
_CSV_EXPECTED = "'path,label[,split][,x0,y0,x1,y1]' (label and box may be empty)"
_SPLITS = ("train", "test", "")


@register_reader
class CsvList(DatasetReader):
    """A CSV list ``path,label[,split][,x0,y0,x1,y1]``; ROOT is the CSV file or a folder with ``list.csv``.

    ``self.root`` is the CSV's folder, so record paths (written relative to the
    CSV, or absolute) stay relative to it. Classes are label names in order of
    first appearance: the list is the user's own, so its order is the one they
    chose. Repeated rows for one image add further boxes.
    """

    name = "csv"

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        given = Path(root)
        self.csv_path = given / "list.csv" if given.is_dir() else given
        if not self.csv_path.is_file():
            raise FeatkitError(
                f"CSV list {self.csv_path} does not exist; give a .csv file or a folder holding list.csv "
                f"with rows {_CSV_EXPECTED}"
            )
        super().__init__(self.csv_path.parent, manifest)
        self._parsed: tuple[list[str], list[ImageRecord]] | None = None

    def _parse(self) -> tuple[list[str], list[ImageRecord]]:
        if self._parsed is not None:
            return self._parsed
        classes: dict[str, int] = {}
        rows: dict[str, ImageRecord] = {}
        # Decoded up front (not while iterating) so a file that is not UTF-8 fails in one line.
        reader = csv.reader(io.StringIO(read_text(self.csv_path), newline=""))
        columns: tuple[str, ...] | None = None
        for cells in reader:
            line_no, line = reader.line_num, ",".join(cells)
            cells = [c.strip() for c in cells]
            if not any(cells):
                continue
            if columns is None and cells[0].lower() == "path":
                columns = self._header(cells, line_no, line)
                continue
            if columns is None:
                columns = _CSV_SHAPES.get(len(cells))
            if columns is None or len(cells) != len(columns):
                raise self.malformed(self.csv_path, line_no, line, _CSV_EXPECTED)
            record = self._row(dict(zip(columns, cells)), classes, line_no, line)
            previous = rows.get(record.path)
            if previous is not None:
                if (previous.label, previous.split) != (record.label, record.split):
                    raise self.malformed(
                        self.csv_path, line_no, line, "the same label and split as the earlier row for this image"
                    )
                record = ImageRecord(record.path, record.label, record.split, previous.boxes + record.boxes)
            rows[record.path] = record
        if not rows:
            raise FeatkitError(f"{self.csv_path}: no image rows; expected rows {_CSV_EXPECTED}")
        self._parsed = (list(classes), list(rows.values()))
        return self._parsed

    def _header(self, cells: list[str], line_no: int, line: str) -> tuple[str, ...]:
        names = tuple(c.lower() for c in cells)
        boxes = {"x0", "y0", "x1", "y1"} & set(names)
        if (
            len(set(names)) != len(names)
            or not set(names) <= set(_CSV_COLUMNS)
            or not {"path", "label"} <= set(names)
            or boxes not in (set(), {"x0", "y0", "x1", "y1"})
        ):
            expected = f"a header naming columns from {', '.join(_CSV_COLUMNS)}"
            raise self.malformed(self.csv_path, line_no, line, expected)
        return names

    def _row(self, row: dict[str, str], classes: dict[str, int], line_no: int, line: str) -> ImageRecord:
        """One CSV row as a record; the class list grows in order of first appearance."""
        if not row["path"]:
            raise self.malformed(self.csv_path, line_no, line, "a non-empty image path")
        given = Path(row["path"].replace("\\", "/"))
        image = given if given.is_absolute() else self.root / given
        if not image.is_file():
            what = "is not a regular file (a folder, FIFO or device)" if image.exists() else "does not exist"
            raise FeatkitError(f"{self.csv_path}:{line_no}: image {image} {what}; list image files only")
        path = Path(os.path.relpath(image, self.root)).as_posix()
        label = -1
        if row["label"]:
            label = classes.setdefault(row["label"], len(classes))
        split = row.get("split", "").lower()
        if split not in _SPLITS:
            raise self.malformed(self.csv_path, line_no, line, "split 'train', 'test' or empty")
        corners = [row.get(k, "") for k in ("x0", "y0", "x1", "y1")]
        boxes: tuple[Box, ...] = ()
        if any(corners):
            try:
                x0, y0, x1, y1 = (float(v) for v in corners)
            except ValueError:
                expected = "four numbers x0,y0,x1,y1 or four empty cells"
                raise self.malformed(self.csv_path, line_no, line, expected) from None
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                raise self.malformed(self.csv_path, line_no, line, "finite numbers x0,y0,x1,y1 (pixel corners)")
            if not (x0 < x1 and y0 < y1):
                raise self.malformed(self.csv_path, line_no, line, "a box with x0 < x1 and y0 < y1 (pixel corners)")
            boxes = ((x0, y0, x1, y1),)
        return ImageRecord(path=path, label=label, split=split, boxes=boxes)

    def classes(self) -> list[str]:
        return self._parse()[0]

    def records(self) -> list[ImageRecord]:
        return list(self._parse()[1])

