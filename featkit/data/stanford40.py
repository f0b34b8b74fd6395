"""Stanford 40 Actions: ``JPEGImages/<action>_NNN.jpg``, ``ImageSplits/actions.txt`` and
``<action>_train.txt`` / ``<action>_test.txt``, optional ``XMLAnnotations/<action>_NNN.xml``
(``<object><bndbox>`` xmin/ymin/xmax/ymax, 1-based inclusive)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from featkit.data.base import Box, DatasetReader, ImageRecord, Manifest, text_lines
from featkit.data.registry import register_reader
from featkit.errors import FeatkitError


def read_voc_boxes(path: Path) -> tuple[Box, ...]:
    """Every ``<object><bndbox>`` of a VOC-style XML file, as pixel corners.

    VOC corners are 1-based and inclusive, so (xmin, ymin, xmax, ymax) becomes
    (xmin - 1, ymin - 1, xmax, ymax).
    """
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise FeatkitError(f"{path}: malformed XML ({exc}); re-extract the annotation file") from exc
    boxes: list[Box] = []
    for bndbox in tree.getroot().iter("bndbox"):
        try:
            xmin, ymin, xmax, ymax = (float(bndbox.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise FeatkitError(f"{path}: a <bndbox> lacks numeric xmin, ymin, xmax and ymax") from None
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
    return tuple(boxes)


@register_reader
class Stanford40(DatasetReader):
    """Class order is ``actions.txt``; the official split is the per-action list files."""

    name = "stanford40"

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        super().__init__(root, manifest)
        self.require("JPEGImages", folder=True)
        self.require("ImageSplits", folder=True)
        self.actions_path = self.require("ImageSplits/actions.txt")
        annotations = self.root / "XMLAnnotations"
        self.annotations: Path | None = annotations if annotations.is_dir() else None

    def classes(self) -> list[str]:
        actions: list[str] = []
        for line_no, line in text_lines(self.actions_path):
            parts = line.split()
            if line_no == 1 and parts[0] == "action_name":
                continue
            if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()) or parts[0] in actions:
                raise self.malformed(self.actions_path, line_no, line, "'<action_name> <number_of_images>'")
            actions.append(parts[0])
        if not actions:
            raise FeatkitError(f"{self.actions_path}: lists no actions; expected one '<action_name> <count>' per line")
        return actions

    def records(self) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        seen: set[str] = set()
        for label, action in enumerate(self.classes()):
            for split in ("train", "test"):
                path = self.require(f"ImageSplits/{action}_{split}.txt")
                for line_no, line in text_lines(path):
                    if not (line.startswith(f"{action}_") and line.lower().endswith(".jpg")) or "/" in line:
                        raise self.malformed(path, line_no, line, f"'{action}_NNN.jpg'")
                    if line in seen:
                        raise self.malformed(path, line_no, line, "each image in only one split list")
                    seen.add(line)
                    records.append(
                        ImageRecord(path=f"JPEGImages/{line}", label=label, split=split, boxes=self._boxes(line))
                    )
        return records

    def _boxes(self, image: str) -> tuple[Box, ...]:
        """The image's XML boxes; none when the annotations (or this file) are absent."""
        if self.annotations is None:
            return ()
        xml = self.annotations / (Path(image).stem + ".xml")
        return read_voc_boxes(xml) if xml.is_file() else ()
