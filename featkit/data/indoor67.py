"""MIT Indoor-67 (Quattoni & Torralba 2009): ``Images/<class>/<file>.jpg`` with the official
``TrainImages.txt`` / ``TestImages.txt`` lists (``class/file.jpg``; 80 train / 20 test per class)."""

from __future__ import annotations

from pathlib import Path

from featkit.data.base import DatasetReader, ImageRecord, Manifest, text_lines
from featkit.data.folder import subfolders
from featkit.data.registry import register_reader
from featkit.errors import FeatkitError


@register_reader
class Indoor67(DatasetReader):
    """Records are the images the two official lists name (the Images folder holds more).

    The dataset has no class-order file, so classes are the sorted folder names under Images.
    """

    name = "indoor67"

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        super().__init__(root, manifest)
        self.images = self.require("Images", folder=True)
        self.lists = {"train": self.require("TrainImages.txt"), "test": self.require("TestImages.txt")}

    def classes(self) -> list[str]:
        names = subfolders(self.images)
        if not names:
            raise FeatkitError(f"{self.images}: no class folders; expected Images/<class>/<file>.jpg")
        return names

    def records(self) -> list[ImageRecord]:
        index = {name: i for i, name in enumerate(self.classes())}
        records: list[ImageRecord] = []
        seen: set[str] = set()
        for split, path in self.lists.items():
            for line_no, line in text_lines(path):
                entry = line.replace("\\", "/")
                class_name, _, file = entry.rpartition("/")
                if class_name not in index or not file:
                    raise self.malformed(path, line_no, line, "'<class>/<file>.jpg' with <class> a folder under Images")
                if entry in seen:
                    raise self.malformed(path, line_no, line, "each image listed once in the two lists")
                seen.add(entry)
                records.append(ImageRecord(path=f"Images/{entry}", label=index[class_name], split=split))
        return records
