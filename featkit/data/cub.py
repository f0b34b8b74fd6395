"""CUB-200-2011: ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``,
``classes.txt``, ``bounding_boxes.txt`` and ``images/<NNN.Name>/<file>.jpg``."""

from __future__ import annotations

from pathlib import Path

from featkit.data.base import DatasetReader, ImageRecord
from featkit.data.registry import register_reader


@register_reader
class CUB200(DatasetReader):
    name = "cub200"

    def _table(self, relative: str, columns: int, expected: str) -> dict[int, list[str]]:
        """``id value...`` lines of an official file, keyed by image/class id."""
        path = self.require(relative)
        table: dict[int, list[str]] = {}
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != columns or not parts[0].isdigit():
                raise self.malformed(path, line_no, line, expected)
            table[int(parts[0])] = parts[1:]
        return table

    def classes(self) -> list[str]:
        table = self._table("classes.txt", 2, "'<class_id> <NNN.Name>'")
        return [table[k][0] for k in sorted(table)]

    def records(self) -> list[ImageRecord]:
        images = self._table("images.txt", 2, "'<image_id> <class_folder>/<file>.jpg'")
        labels = self._table("image_class_labels.txt", 2, "'<image_id> <class_id>'")
        splits = self._table("train_test_split.txt", 2, "'<image_id> <1 for train, 0 for test>'")
        boxes = self._table("bounding_boxes.txt", 5, "'<image_id> <x> <y> <width> <height>'")
        class_ids = sorted(self._table("classes.txt", 2, "'<class_id> <NNN.Name>'"))
        class_index = {cid: i for i, cid in enumerate(class_ids)}
        self.require("images", folder=True)
        records = []
        for image_id in sorted(images):
            for table, file in ((labels, "image_class_labels.txt"), (splits, "train_test_split.txt")):
                if image_id not in table:
                    raise self.malformed(
                        self.root / file, 0, f"(no line for image {image_id})", "a line for every id of images.txt"
                    )
            box: tuple = ()
            if image_id in boxes:
                x, y, w, h = (float(v) for v in boxes[image_id])
                box = ((x, y, x + w, y + h),)
            records.append(
                ImageRecord(
                    path=str(Path("images") / images[image_id][0]).replace("\\", "/"),
                    label=class_index[int(labels[image_id][0])],
                    split="train" if splits[image_id][0] == "1" else "test",
                    boxes=box,
                )
            )
        return records
