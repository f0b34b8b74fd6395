"""CUB-200-2011: ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``,
``classes.txt``, ``bounding_boxes.txt`` and ``images/<NNN.Name>/<file>.jpg``."""

from __future__ import annotations

import math
from pathlib import Path

from featkit.data.base import DatasetReader, ImageRecord, text_lines
from featkit.data.registry import register_reader

_Table = dict[int, tuple[int, str, list[str]]]
"""id -> (line number, line, the values after the id) of one official file."""


@register_reader
class CUB200(DatasetReader):
    name = "cub200"

    def _table(self, relative: str, columns: int, expected: str) -> tuple[Path, _Table]:
        """``id value...`` lines of an official file, keyed by image/class id (each id once)."""
        path = self.require(relative)
        table: _Table = {}
        for line_no, line in text_lines(path):
            parts = line.split()
            if len(parts) != columns or not parts[0].isdigit():
                raise self.malformed(path, line_no, line, expected)
            if int(parts[0]) in table:
                raise self.malformed(path, line_no, line, f"each id once (id {parts[0]} is also on line "
                                     f"{table[int(parts[0])][0]})")
            table[int(parts[0])] = (line_no, line, parts[1:])
        return path, table

    def classes(self) -> list[str]:
        _, table = self._table("classes.txt", 2, "'<class_id> <NNN.Name>'")
        return [table[k][2][0] for k in sorted(table)]

    def records(self) -> list[ImageRecord]:
        _, images = self._table("images.txt", 2, "'<image_id> <class_folder>/<file>.jpg'")
        labels_path, labels = self._table("image_class_labels.txt", 2, "'<image_id> <class_id>'")
        splits_path, splits = self._table("train_test_split.txt", 2, "'<image_id> <1 for train, 0 for test>'")
        boxes_path, boxes = self._table("bounding_boxes.txt", 5, "'<image_id> <x> <y> <width> <height>'")
        _, class_table = self._table("classes.txt", 2, "'<class_id> <NNN.Name>'")
        class_index = {cid: i for i, cid in enumerate(sorted(class_table))}
        self.require("images", folder=True)
        records = []
        for image_id in sorted(images):
            for table, path in ((labels, labels_path), (splits, splits_path)):
                if image_id not in table:
                    raise self.malformed(path, 0, f"(no line for image {image_id})", "a line for every id of images.txt")
            line_no, line, (class_id,) = labels[image_id]
            if not class_id.isdigit() or int(class_id) not in class_index:
                raise self.malformed(labels_path, line_no, line, "'<image_id> <class_id>' with a class id of classes.txt")
            split_no, split_line, (flag,) = splits[image_id]
            if flag not in ("0", "1"):
                raise self.malformed(splits_path, split_no, split_line, "'<image_id> <1 for train, 0 for test>'")
            box: tuple = ()
            if image_id in boxes:
                box_no, box_line, values = boxes[image_id]
                expected = "'<image_id> <x> <y> <width> <height>' numbers"
                try:
                    x, y, w, h = (float(v) for v in values)
                except ValueError:
                    raise self.malformed(boxes_path, box_no, box_line, expected) from None
                if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
                    raise self.malformed(boxes_path, box_no, box_line, "finite numbers with width and height > 0")
                box = ((x, y, x + w, y + h),)
            records.append(
                ImageRecord(
                    path=str(Path("images") / images[image_id][2][0]).replace("\\", "/"),
                    label=class_index[int(class_id)],
                    split="train" if flag == "1" else "test",
                    boxes=box,
                )
            )
        return records
