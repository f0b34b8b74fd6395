"""Which layout a dataset root is in, from the files the official readers require.

``featkit extract DIR`` without a layout name asks here and says what it found in
one line. Official layouts are recognised by their own list files or folders; a
torchvision-style ``train/val/test`` tree by its split folders; anything else
holding class folders of images is a plain class tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from featkit.data.folder import image_files, split_folders, subfolders
from featkit.errors import FeatkitError

_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cub200", ("images.txt", "train_test_split.txt", "images/")),
    ("stanford40", ("JPEGImages/", "ImageSplits/")),
    ("caltech101", ("101_ObjectCategories/",)),
    ("caltech256", ("256_ObjectCategories/",)),
    ("indoor67", ("Images/", "TrainImages.txt")),
    ("sun_attribute", ("SUNAttributeDB/", "images/")),
    ("sun397", ("Partitions/",)),
)
"""Official layouts and the entries (``name/`` for a folder) that together identify them, checked in order."""


@dataclass(frozen=True)
class Detection:
    """A detected layout: the manifest name and what gave it away (one line for the user)."""

    name: str
    reason: str


def _present(root: Path, entry: str) -> bool:
    path = root / entry.rstrip("/")
    return path.is_dir() if entry.endswith("/") else path.is_file()


def detect_layout(root: str | Path) -> Detection:
    """The layout of ``root``: an official one, ``csv`` or ``folder`` (also a train/val tree); FeatkitError if none fits."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return Detection("csv", f"{root.name} is a CSV list")
        raise FeatkitError(f"dataset root {root} is a file but not a .csv list; give a folder of images or a .csv")
    if not root.is_dir():
        raise FeatkitError(f"dataset root {root} does not exist or is not a folder")
    for name, entries in _MARKERS:
        if all(_present(root, e) for e in entries):
            return Detection(name, "has " + ", ".join(entries))
    splits = split_folders(root)
    if splits:
        return Detection("folder", f"split folders {', '.join(splits)} of class folders (their names are the split)")
    classes = [c for c in subfolders(root) if image_files(root / c)]
    if classes:
        return Detection("folder", f"{len(classes)} class folders of images")
    if (root / "list.csv").is_file():
        return Detection("csv", "holds list.csv")
    raise FeatkitError(
        f"cannot tell the layout of {root}: no class folders with images, no train/<class>/ folders, no list.csv "
        "and no official dataset files; give dataset=NAME (see featkit.data.manifest_names())"
    )
