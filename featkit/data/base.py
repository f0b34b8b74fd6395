"""What every dataset reader returns, and the split protocols they share.

A reader turns one official on-disk layout into an ordered list of
:class:`ImageRecord` plus the class list in the dataset's own fixed order.
Everything else (which images train, how many folds, which metric, the paper's
number) lives in the dataset's manifest (``data_manifests/<name>.toml``), so a
new layout is one small module with one class.
"""

from __future__ import annotations

import tomllib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from featkit.errors import FeatkitError

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in original-image pixels, continuous corners: the whole
W x H image is (0, 0, W, H). Readers convert each dataset's own convention."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset, as the official files describe it."""

    path: str
    """Relative to the dataset root, '/'-separated."""
    label: int = -1
    """Index into the reader's class list; -1 when the image has none."""
    split: str = ""
    """Official split ('train', 'test', ...); '' when the protocol draws it."""
    boxes: tuple[Box, ...] = ()
    """Ground-truth boxes in original pixels; the first is the main one."""
    attributes: tuple[float, ...] | None = None
    """Multi-label targets (SUN Attribute), one value per class; else None."""


@dataclass(frozen=True)
class Protocol:
    """How train/test splits are made: the official files, or N random per class."""

    kind: str = "official"  # "official" | "random" | "none"
    train_per_class: int = 0
    test_per_class: int = 0  # 0: every image not drawn for training
    folds: int = 1
    seed: int = 0
    official_folds: int = 1  # SUN397 ships 10 official partitions
    test_fraction: float = 0.0
    """``random`` with a fraction (a user's holdout): this share of each class tests, the rest trains."""

    def describe(self) -> str:
        """One line saying how the splits were made (recorded in features.h5 as ``split_protocol``)."""
        if self.kind != "random":
            return self.kind
        if self.test_fraction:
            draws = f"{self.folds} random draws" if self.folds > 1 else "one random draw"
            return f"holdout {self.test_fraction:g} of each class, stratified, {draws}, seed {self.seed}"
        test = f"{self.test_per_class} test" if self.test_per_class else "rest test"
        return f"random {self.train_per_class} train/class, {test}, {self.folds} folds, seed {self.seed}"


@dataclass(frozen=True)
class Manifest:
    """A dataset's protocol card, read from ``data_manifests/<name>.toml``."""

    name: str
    title: str
    reader: str
    layout: str
    class_order: str
    metric: str  # "accuracy" | "mean_per_class_accuracy" | "map"
    protocol: Protocol
    paper: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @classmethod
    def from_toml(cls, text: str, source: str) -> Manifest:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise FeatkitError(f"{source}: not valid TOML ({exc}); fix the manifest file") from exc
        try:
            return cls(
                name=raw["name"],
                title=raw["title"],
                reader=raw["reader"],
                layout=raw["layout"].strip(),
                class_order=raw["class_order"],
                metric=raw["metric"],
                protocol=Protocol(**raw.get("protocol", {})),
                paper=dict(raw.get("paper", {})),
                notes=raw.get("notes", "").strip(),
            )
        except (KeyError, TypeError) as exc:
            raise FeatkitError(f"{source}: missing or unknown manifest key {exc}") from exc


def manifest_names() -> list[str]:
    """Names of the manifests shipped with featkit, sorted."""
    folder = resources.files("featkit.data_manifests")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_manifest(name: str) -> Manifest:
    """The shipped manifest called ``name``; a clear error lists the known ones."""
    resource = resources.files("featkit.data_manifests").joinpath(f"{name}.toml")
    if not resource.is_file():
        known = ", ".join(manifest_names())
        raise FeatkitError(f"unknown dataset '{name}'; choose one of: {known} (see featkit.data.manifest_names())")
    return Manifest.from_toml(resource.read_text(encoding="utf-8"), f"data_manifests/{name}.toml")


def malformed_line(path: Path, line_no: int, line: str, expected: str) -> FeatkitError:
    """The one form of a reader error: ``file:line: malformed line '...'; expected ...``."""
    return FeatkitError(f"{path}:{line_no}: malformed line {line.strip()!r}; expected {expected}")


def read_text(path: Path) -> str:
    """A list or metadata file as text (UTF-8, a BOM allowed); one error naming the file and the line if not."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = data.count(b"\n", 0, exc.start) + 1
        raise FeatkitError(
            f"{path}:{line_no}: byte {data[exc.start:exc.start + 1]!r} is not UTF-8 text; expected a UTF-8 file "
            "(re-save it as UTF-8)"
        ) from None


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines of an official list file."""
    for line_no, line in enumerate(read_text(path).splitlines(), 1):
        if line.strip():
            yield line_no, line.strip()


class DatasetReader(ABC):
    """Reads one official layout. Subclasses set ``name`` and implement two methods.

    Subclasses validate the root in ``__init__`` (through :meth:`require`) so a
    wrong folder fails before any work starts, naming the missing file and the
    layout the manifest describes.
    """

    name: ClassVar[str]

    def __init__(self, root: str | Path, manifest: Manifest) -> None:
        self.root = Path(root)
        self.manifest = manifest
        if not self.root.is_dir():
            raise FeatkitError(
                f"dataset root {self.root} does not exist or is not a folder; "
                f"expected the {manifest.title} layout: {' '.join(manifest.layout.split())}"
            )

    def require(self, relative: str, *, folder: bool = False) -> Path:
        """The path ``root/relative``, or a FeatkitError naming it and the layout."""
        path = self.root / relative
        ok = path.is_dir() if folder else path.is_file()
        if not ok:
            kind = "folder" if folder else "file"
            raise FeatkitError(
                f"{self.manifest.title}: missing {kind} {path}; expected layout: "
                + " ".join(self.manifest.layout.split())
            )
        return path

    def malformed(self, path: Path, line_no: int, line: str, expected: str) -> FeatkitError:
        """An error for one bad line of an official file: ``file:line: what was found; what was expected``."""
        return malformed_line(path, line_no, line, expected)

    @abstractmethod
    def classes(self) -> list[str]:
        """Class names in the dataset's fixed official order."""

    @abstractmethod
    def records(self) -> list[ImageRecord]:
        """Every image of the dataset, in a deterministic order."""

    def official_splits(self, records: list[ImageRecord]) -> np.ndarray:
        """(N, F) split names from the official files; one column from ``record.split``.

        Layouts with several official partitions (SUN397's ten) override this.
        """
        return np.array([r.split for r in records], dtype=object).reshape(len(records), 1)


def draw_splits(labels: np.ndarray, protocol: Protocol) -> np.ndarray:
    """Per-fold 'train'/'test'/'' columns for a random N-per-class protocol.

    Fold f uses ``numpy.random.default_rng(seed + f)``; for each class (in label
    order) it permutes that class's images, takes ``train_per_class`` for
    training and the next ``test_per_class`` (or all the rest when 0) for
    testing; images in neither get ''. Unlabelled images (-1) are never drawn.
    With ``test_fraction`` the first round(fraction x n) of the permutation test
    (at least one, and at least one left to train, for a class of two or more) and the rest train.
    """
    n = len(labels)
    table = np.full((n, protocol.folds), "", dtype=object)
    for fold in range(protocol.folds):
        rng = np.random.default_rng(protocol.seed + fold)
        for cls in np.unique(labels[labels >= 0]):
            members = np.flatnonzero(labels == cls)
            order = rng.permutation(members)
            if protocol.test_fraction:
                n_test = min(max(1, round(protocol.test_fraction * len(order))), len(order) - 1)
                table[order[n_test:], fold] = "train"
                table[order[:n_test], fold] = "test"
                continue
            train = order[: protocol.train_per_class]
            rest = order[protocol.train_per_class :]
            test = rest if protocol.test_per_class == 0 else rest[: protocol.test_per_class]
            table[train, fold] = "train"
            table[test, fold] = "test"
    return table


@dataclass
class Dataset:
    """A reader bound to its manifest: records, classes and the split table."""

    reader: DatasetReader
    protocol_override: Protocol | None = None
    """A split protocol asked for by the user (:meth:`with_holdout`) instead of the manifest's."""

    @property
    def manifest(self) -> Manifest:
        return self.reader.manifest

    @property
    def protocol(self) -> Protocol:
        """The split protocol in force: the user's holdout, else the manifest's."""
        return self.protocol_override or self.manifest.protocol

    def __len__(self) -> int:
        return len(self.records())

    def with_holdout(self, fraction: float, folds: int = 1, seed: int = 0) -> Dataset:
        """This dataset with a stratified, seeded random split: ``fraction`` of each class tests, ``folds`` draws.

        For layouts without a split of their own (a plain folder tree, a list without a split column).
        """
        if not 0 < fraction < 1:
            raise FeatkitError(f"holdout must be a fraction between 0 and 1 (e.g. 0.25), got {fraction}")
        if folds < 1:
            raise FeatkitError(f"folds must be at least 1, got {folds}")
        own = sorted({r.split for r in self.records() if r.split})
        if self.manifest.protocol.kind != "none" or own:
            what = f"splits {', '.join(own)}" if own else f"a {self.manifest.protocol.kind} split protocol"
            raise FeatkitError(f"{self.manifest.title} at {self.root} has its own {what}; holdout is for a tree "
                               "or list without one")
        protocol = Protocol(kind="random", folds=folds, seed=seed, test_fraction=fraction)
        return Dataset(self.reader, protocol)

    @property
    def root(self) -> Path:
        return self.reader.root

    def classes(self) -> list[str]:
        return self.reader.classes()

    def records(self) -> list[ImageRecord]:
        return self.reader.records()

    def split_table(self, records: list[ImageRecord]) -> np.ndarray:
        """(N, F) array of split names, one column per fold of the protocol."""
        protocol = self.protocol
        if protocol.kind == "random":
            labels = np.array([r.label for r in records], dtype=np.int64)
            return draw_splits(labels, protocol)
        return self.reader.official_splits(records)
