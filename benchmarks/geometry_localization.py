"""Localization of the default input geometry against warp, on every box set, class by class.

A default must not buy classification accuracy with boxes: this runs
:func:`benchmarks.localization.run_store` (thresholds and the best method
chosen on TRAIN, the paper's ``cam`` at its a-priori 0.2) on stores of every
sample box set extracted under each geometry, and writes one row per box set
and class: the paper's CAM and the best class-specific method (chosen on
train) of each geometry side by side, and the difference, so a class that
collapses under one geometry is visible.

Box sets (``--data-dir``): CUB-200-2011, Stanford 40 (persons), Caltech-101
(airplanes, .mat boxes; no test split, redrawn half/half per class) and
Caltech101_boxes (airplanes, faces, motorbikes; csv layout).

    python -m benchmarks.geometry_localization --data-dir ../shared/data --cache /tmp/loc
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.localization import DEFAULT_METHODS, run_store
from benchmarks.tables import write_table
from featkit.cam.methods import CLASS_AGNOSTIC
from featkit.data import open_dataset
from featkit.data.geometry import DEFAULT_RESIZE
from featkit.errors import FeatkitError
from featkit.features import ExtractOptions, FeatureFile, extract
from featkit.linear import save_svm, train_svm

BOX_SETS: dict[str, tuple[str, str]] = {
    "cub": ("cub200", "CUB_200_2011"),
    "s40": ("stanford40", "Stanford40"),
    "cal": ("caltech101", "Caltech101"),
    "calbox": ("csv", "Caltech101_boxes/boxes.csv"),
}
"""Store prefix -> (dataset layout, path under --data-dir)."""


def build_store(prefix: str, root: Path, cache: Path, resize: str, options: ExtractOptions) -> tuple[Path, Path | None]:
    """``cache/<prefix>_<resize>.h5`` (maps on) and its svm.h5 on the train split (None without a test split)."""
    layout, _ = BOX_SETS[prefix]
    features_path, svm_path = cache / f"{prefix}_{resize}.h5", cache / f"svm_{prefix}_{resize}.h5"
    extract(open_dataset(layout, root), features_path, replace(options, resize=resize, maps=True))
    with FeatureFile(features_path) as features:
        if "test" not in set(features.splits[:, 0]):
            return features_path, None
        if not svm_path.is_file():
            svm, trained_on = train_svm(features)
            save_svm(svm_path, svm, features.classes, features, trained_on)
    return features_path, svm_path


def compare(per_class: list[dict[str, Any]], rows: list[dict[str, Any]], prefix: str, geometries: Sequence[str]
            ) -> list[list[str]]:
    """Per-class rows of one box set: paper CAM and best-on-train method of each geometry, and the differences."""
    def best_method(store: str) -> str:
        candidates = [r for r in rows if r["store"] == store and r.get("train_accuracy") is not None
                      and r["method"] in DEFAULT_METHODS and r["method"] not in CLASS_AGNOSTIC]
        return max(candidates, key=lambda r: r["train_accuracy"])["method"]

    stores = [f"{prefix} {g}" for g in geometries]
    best = {s: best_method(s) for s in stores}
    classes = list(dict.fromkeys(c["class"] for c in per_class if c["store"] == stores[0]))
    out = []
    for name in [*classes, "all"]:
        cells: list[str] = []
        values: dict[tuple[str, str], float] = {}
        n = 0
        for s in stores:
            for kind, method in (("cam", "cam"), ("best", best[s])):
                if name == "all":
                    value = next(r["gt_known"] for r in rows if r["store"] == s and r["method"] == method)
                    n = next(r["n_test"] for r in rows if r["store"] == s and r["method"] == method)
                else:
                    found = next(c for c in per_class if c["store"] == s and c["class"] == name
                                 and c["method"] == method)
                    value, n = found["gt_known"], found["n"]
                values[(s, kind)] = float(value)
        for kind in ("cam", "best"):
            for s in stores:
                label = "" if kind == "cam" else f" ({best[s]})"
                cells.append(f"{100 * values[(s, kind)]:.1f}{label}")
            delta = values[(stores[0], kind)] - values[(stores[1], kind)]
            cells.append(f"{100 * delta:+.1f}" + (" **miss**" if delta < -1e-9 else ""))
        out.append([prefix, name, str(n), *cells])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/results/features/geometry_localization"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--geometries", default=f"{DEFAULT_RESIZE},warp",
                        help="two geometries, the first compared against the second (default: featkit's, warp)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--sets", nargs="+", default=list(BOX_SETS), choices=list(BOX_SETS))
    args = parser.parse_args(argv)
    geometries = [g.strip() for g in args.geometries.split(",")]
    if len(geometries) != 2:
        print("geometry_localization: error: --geometries takes two names, e.g. short-side,warp", file=sys.stderr)
        return 2
    options = ExtractOptions(workers=0) if args.model is None else ExtractOptions(model=args.model, workers=0)
    args.cache.mkdir(parents=True, exist_ok=True)
    table = [["box set", "class", "test images",
              *(f"paper CAM, {g}" for g in geometries), "paper CAM Δ",
              *(f"best on train, {g}" for g in geometries), "best Δ"]]
    try:
        for prefix in args.sets:
            root = args.data_dir / BOX_SETS[prefix][1]
            if not root.exists():
                print(f"{prefix}: {root} is absent, skipped", flush=True)
                continue
            done = args.cache / f"geometry_localization_{prefix}_{'_'.join(geometries)}.json"
            if done.is_file():  # a set finished by an earlier run over the same stores
                rows, per_class = json.loads(done.read_text())
            else:
                rows, per_class = [], []
                for g in geometries:
                    features_path, svm_path = build_store(prefix, root, args.cache, g, options)
                    r, c, _ = run_store(f"{prefix} {g}", features_path, svm_path, DEFAULT_METHODS, oracle=False)
                    rows += r
                    per_class += c
                done.write_text(json.dumps([rows, per_class], default=float))
            table += compare(per_class, rows, prefix, geometries)
            print(f"{prefix}: done", flush=True)
    except FeatkitError as exc:
        print(f"geometry_localization: error: {exc}", file=sys.stderr)
        return 2
    misses = sum(1 for row in table[1:] for cell in row if "miss" in cell)
    note = (f"GT-known localization (IoU ≥ 0.5) on the test images of each box set, {geometries[0]} against "
            f"{geometries[1]}, every other setting featkit's default; Δ = {geometries[0]} − {geometries[1]} in points "
            "(**miss**: the first geometry localizes that class worse). Paper CAM: the SVM weights' CAM, threshold 0.2 "
            "a priori. Best on train: the class-specific method with the highest TRAIN calibration accuracy of each "
            "store (benchmarks/localization.py), its threshold chosen on train. Caltech-101 (.mat) has no test split: "
            f"its images are redrawn half/half per class. {misses} cells marked miss.")
    print(write_table(table, args.out, "geometry_localization", note, align_right_from=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
