"""SUN397 (Xiao et al. 2010): ``ClassName.txt`` (``/a/abbey``), the ten official partitions
``Partitions/Training_NN.txt`` / ``Testing_NN.txt`` (``/a/abbey/sun_....jpg``) and the images
at ``SUN397/a/abbey/...`` or directly at ``a/abbey/...`` under ROOT."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featkit.data.base import DatasetReader, ImageRecord, Manifest, text_lines
from featkit.data.registry import register_reader
from featkit.errors import FeatkitError


def _is_class_path(line: str) -> bool:
    """``/<letter>/<name>``: the form of every ClassName.txt line."""
    return len(line) > 3 and line[0] == "/" and line[2] == "/" and line[1].isalpha() and line[3] != "/"


@register_reader
class SUN397(DatasetReader):
    """Records are every image any partition names; each partition is one split-table column.

    ``ImageRecord.split`` carries partition 01 (the one most papers report), and
    :meth:`official_splits` gives all ``protocol.official_folds`` columns.
    """

    name = "sun397"

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        super().__init__(root, manifest)
        # The official Partitions.zip also carries ClassName.txt, so accept it there too.
        beside = self.root / "Partitions" / "ClassName.txt"
        top = self.root / "ClassName.txt"
        self.class_file = beside if beside.is_file() and not top.is_file() else self.require("ClassName.txt")
        self.partition_files = [
            (self.require(f"Partitions/Training_{k:02d}.txt"), self.require(f"Partitions/Testing_{k:02d}.txt"))
            for k in range(1, max(1, manifest.protocol.official_folds) + 1)
        ]
        self.prefix = "SUN397/" if (self.root / "SUN397").is_dir() else ""
        self._class_paths: list[str] | None = None
        self._partitions: list[dict[str, str]] | None = None

    def _read_classes(self) -> list[str]:
        """ClassName.txt lines, e.g. ``/a/apartment_building/outdoor``, in file order."""
        if self._class_paths is None:
            paths: list[str] = []
            for line_no, line in text_lines(self.class_file):
                if not _is_class_path(line) or line in paths:
                    raise self.malformed(self.class_file, line_no, line, "'/<letter>/<class name>', each class once")
                paths.append(line.rstrip("/"))
            if not paths:
                raise FeatkitError(f"{self.class_file}: lists no classes; expected '/<letter>/<class name>' lines")
            first = self.root / self.prefix / paths[0].lstrip("/")
            if not first.is_dir():
                raise FeatkitError(
                    f"{self.manifest.title}: missing image folder {first}; expected the images at "
                    f"ROOT/SUN397{paths[0]}/ or ROOT{paths[0]}/"
                )
            self._class_paths = paths
        return self._class_paths

    def classes(self) -> list[str]:
        """Class names without the leading ``/<letter>/``: ``abbey``, ``apartment_building/outdoor``."""
        return [p[3:] for p in self._read_classes()]

    def _read_partitions(self) -> list[dict[str, str]]:
        """Per partition: record path -> 'train' / 'test'."""
        if self._partitions is None:
            known = set(self._read_classes())
            partitions: list[dict[str, str]] = []
            for files in self.partition_files:
                splits: dict[str, str] = {}
                for split, path in zip(("train", "test"), files):
                    for line_no, line in text_lines(path):
                        class_path, _, file = line.rpartition("/")
                        if class_path not in known or not file:
                            expected = "'/<letter>/<class>/<file>.jpg' of a ClassName.txt class"
                            raise self.malformed(path, line_no, line, expected)
                        key = self.prefix + line.lstrip("/")
                        if key in splits:
                            raise self.malformed(path, line_no, line, "each image once per partition (train or test)")
                        splits[key] = split
                partitions.append(splits)
            self._partitions = partitions
        return self._partitions

    def records(self) -> list[ImageRecord]:
        index = {p: i for i, p in enumerate(self._read_classes())}
        partitions = self._read_partitions()
        paths = set().union(*partitions)
        labelled = sorted((index["/" + p[len(self.prefix) :].rpartition("/")[0]], p) for p in paths)
        return [ImageRecord(path=p, label=label, split=partitions[0].get(p, "")) for label, p in labelled]

    def official_splits(self, records: list[ImageRecord]) -> np.ndarray:
        partitions = self._read_partitions()
        table = np.full((len(records), len(partitions)), "", dtype=object)
        for f, splits in enumerate(partitions):
            table[:, f] = [splits.get(r.path, "") for r in records]
        return table
