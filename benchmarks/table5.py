"""Reproduce Table 5 of Zhou et al. (CVPR 2016): linear SVMs on GAP features, eight datasets.

For every dataset found under the given roots: extract features (or reuse a
complete file in --cache), train one-vs-all SVMs under the dataset's protocol
(official split, or N-per-class draws over several folds), score with the
manifest's metric, and print a markdown table with the paper's three rows
beside featkit's rows. Datasets not on disk are listed as missing, never faked.

    python -m benchmarks.table5 --data-dir /data --models efficientnet_lite0
    python -m benchmarks.table5 --root stanford40=../shared/data/Stanford40

``--train-per-class N`` re-draws random protocols with N training images per
class (for small samples); such cells are marked with '*' because they do not
follow the paper's protocol.

``--geometries`` (default: warp, short-side, crop) gives one featkit row per
input geometry, and ``table5_geometry.md`` one column per geometry, so the
cost of squeezing images to a square (or of cutting their borders) is seen
dataset by dataset.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.tables import write_table
from featkit.data import load_manifest, open_dataset
from featkit.data.base import draw_splits
from featkit.data.geometry import RESIZE_POLICIES
from featkit.errors import FeatkitError
from featkit.features import ExtractOptions, extract
from featkit.features.store import FeatureFile
from featkit.linear.protocol import ProtocolResult, run_protocol

DATASETS = ("sun397", "indoor67", "scene15", "sun_attribute", "caltech101", "caltech256", "stanford40", "event8")
FOLDER_NAMES = {
    "sun397": ("SUN397",),
    "indoor67": ("Indoor67", "MIT_Indoor67", "indoorCVPR_09"),
    "scene15": ("Scene15", "15-Scene", "scene_categories"),
    "sun_attribute": ("SUNAttribute", "SUN_Attribute", "SUNAttributeDB"),
    "caltech101": ("Caltech101", "caltech101"),
    "caltech256": ("Caltech256", "caltech256"),
    "stanford40": ("Stanford40", "StanfordActions40"),
    "event8": ("Event8", "UIUC_Event8", "event_img"),
}
PAPER_ROWS = (("fc7 from AlexNet (paper)", "alexnet_fc7"), ("ave pool from GoogLeNet (paper)", "googlenet_avgpool"),
              ("gap from GoogLeNet-GAP (paper)", "googlenet_gap"))

log = logging.getLogger("featkit.table5")


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None


def find_roots(data_dir: Path | None, explicit: Sequence[str]) -> dict[str, Path]:
    roots: dict[str, Path] = {}
    if data_dir is not None:
        for name, folders in FOLDER_NAMES.items():
            for folder in folders:
                if (data_dir / folder).is_dir():
                    roots[name] = data_dir / folder
                    break
    for item in explicit:
        name, sep, path = item.partition("=")
        if not sep or name not in DATASETS:
            raise FeatkitError(f"--root takes NAME=PATH with NAME one of {', '.join(DATASETS)}; got {item!r}")
        roots[name] = Path(path)
    return roots


def evaluate_dataset(name: str, root: Path, model: str, cache: Path, train_per_class: int | None,
                     extract_options: ExtractOptions) -> Cell:
    manifest = load_manifest(name)
    resize = extract_options.resize
    features_path = cache / (f"{name}__{model}.h5" if resize == "warp" else f"{name}__{model}__{resize}.h5")
    dataset = open_dataset(name, root)
    extract(dataset, features_path, replace(extract_options, model=model))
    with FeatureFile(features_path) as features:
        splits = None
        mark = ""
        if train_per_class is not None and manifest.protocol.kind == "random":
            protocol = replace(manifest.protocol, train_per_class=train_per_class, test_per_class=0)
            splits = draw_splits(features.labels, protocol)
            mark = "*"
        result: ProtocolResult = run_protocol(features, manifest.metric, splits=splits)
    return Cell(f"{result}{mark}", result.mean)


def build_table(models: Sequence[str], roots: dict[str, Path], cache: Path, train_per_class: int | None,
                extract_options: ExtractOptions,
                geometries: Sequence[str] = ("warp",)) -> tuple[list[list[str]], list[list[str]]]:
    """The Table 5 rows (paper rows, then one row per model and geometry) and the per-geometry table
    (one row per model and dataset, one column per geometry)."""
    header = ["method", *(load_manifest(n).title for n in DATASETS)]
    rows = [header]
    for label, key in PAPER_ROWS:
        rows.append([label, *(f"{load_manifest(n).paper.get(key, '-')}" for n in DATASETS)])
    cells: dict[tuple[str, str, str], str] = {}
    for model in models:
        for resize in geometries:
            row = [f"{model} GAP (featkit)" + ("" if len(geometries) == 1 else f", {resize}")]
            for name in DATASETS:
                if name not in roots:
                    row.append("missing")
                    continue
                try:
                    options = replace(extract_options, resize=resize)
                    text = evaluate_dataset(name, roots[name], model, cache, train_per_class, options).text
                except FeatkitError as exc:
                    log.warning("%s: %s", name, exc)
                    text = "n/a"
                row.append(text)
                cells[(model, name, resize)] = text
            rows.append(row)
    by_geometry = [["model", "dataset", *geometries]]
    for model in models:
        for name in DATASETS:
            if name in roots:
                by_geometry.append([model, load_manifest(name).title, *(cells[(model, name, g)] for g in geometries)])
    return rows, by_geometry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding the datasets under usual names")
    parser.add_argument("--root", action="append", default=[], metavar="NAME=PATH", help="one dataset root")
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0"])
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/results/features"),
                        help="where features files are written and reused")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="re-draw random protocols with N train images per class (small samples; marked *)")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--geometries", nargs="+", default=list(RESIZE_POLICIES), choices=list(RESIZE_POLICIES),
                        help="input geometries (extract --resize), one row / column each")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        roots = find_roots(args.data_dir, args.root)
        args.cache.mkdir(parents=True, exist_ok=True)
        args.out.mkdir(parents=True, exist_ok=True)
        options = ExtractOptions(image_size=args.image_size, workers=args.workers)
        rows, by_geometry = build_table(args.models, roots, args.cache, args.train_per_class, options,
                                        args.geometries)
    except FeatkitError as exc:
        print(f"table5: error: {exc}", file=sys.stderr)
        return 2
    note = ("\nTable 5 of Zhou et al. (CVPR 2016), linear SVM accuracy (mAP for SUN Attribute) on GAP features. "
            "'missing': dataset not on disk; '*': random protocol re-drawn with "
            f"{args.train_per_class} training images per class (sample data).\n")
    print(write_table(rows, args.out, "table5", note))
    print(write_table(by_geometry, args.out, "table5_geometry",
                      "Table 5 protocols, one column per input geometry (featkit extract --resize); same cells as "
                      "table5.md. These are test-split numbers: they show the trade-off, they chose nothing "
                      "(the default was chosen by train-split CV: geometry_cv.md)."))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
