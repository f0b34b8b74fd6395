"""Choose featkit's input geometry by cross-validation on the TRAINING splits of the sample datasets.

For each sample dataset (CUB-200-2011, Stanford 40, 15-Scene, Caltech-101 in
``--data-dir``) only the training images are extracted (official train split;
for random protocols the training part of fold 0, re-drawn with half of the
smallest class per class since the samples are tiny), under every geometry of
:data:`GEOMETRIES`. Each is scored by repeated stratified k-fold CV of the
one-vs-all linear SVM (L2-normalised GAP, C=1, as svm-train without C search)
inside those training images. No test image is read.

Decision rule, fixed before the run: the default ``resize`` is the policy
with the highest CV accuracy averaged over the datasets (without TTA); flip
TTA stays an option (it doubles extraction time) and its gain is reported.

    python -m benchmarks.geometry_cv --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold

from benchmarks.tables import write_table
from featkit.data import open_dataset
from featkit.data.base import draw_splits
from featkit.errors import FeatkitError
from featkit.features import ExtractOptions, FeatureFile
from featkit.features.extractor import ExtractJob
from featkit.features.pipeline import run_job
from featkit.linear.svm import OneVsAllLinearSVM

GEOMETRIES: tuple[tuple[str, str], ...] = (("warp", "none"), ("short-side", "none"), ("crop", "none"), ("short-side", "flip"))
"""The candidates for the default (no TTA) and flip TTA on the aspect-preserving policy."""
SAMPLES = {"cub200": "CUB_200_2011", "stanford40": "Stanford40", "scene15": "Scene15", "caltech101": "Caltech101"}

log = logging.getLogger("featkit.geometry_cv")


@dataclass(frozen=True)
class CvScore:
    """One geometry on one dataset: CV accuracy (mean, std over the splits) and the extraction time."""

    mean: float
    std: float
    n_images: int
    seconds: float


def label(geometry: tuple[str, str]) -> str:
    resize, tta = geometry
    return resize if tta == "none" else f"{resize} + {tta}"


def train_job(name: str, root: Path, output: Path, options: ExtractOptions, per_class: int | None = None) -> ExtractJob:
    """The extraction of ``name``'s training images only (see the module docstring for random protocols),
    at most the first ``per_class`` of each class when given."""
    dataset = open_dataset(name, root)
    records = dataset.records()
    protocol = dataset.manifest.protocol
    if protocol.kind == "random":
        labels = np.array([r.label for r in records], dtype=np.int64)
        smallest = int(np.bincount(labels[labels >= 0]).min())
        table = draw_splits(labels, replace(protocol, train_per_class=max(2, smallest // 2), test_per_class=0))
    else:
        table = dataset.split_table(records)
    keep = np.flatnonzero(table[:, 0] == "train")
    if per_class is not None:
        labels = np.array([records[i].label for i in keep])
        keep = np.concatenate([keep[labels == c][:per_class] for c in np.unique(labels)])
        keep.sort()
    chosen = [records[i] for i in keep]
    return ExtractJob(Path(root), chosen, dataset.classes(), np.full((len(chosen), 1), "train", dtype=object),
                      dataset.manifest.name, output, options)


def cv_accuracy(gap: np.ndarray, y: np.ndarray, folds: int = 5, repeats: int = 4, seed: int = 0) -> tuple[float, float]:
    """Mean and std over ``repeats`` x ``folds`` stratified splits of the one-vs-all SVM's accuracy."""
    present = np.unique(y)
    y = np.searchsorted(present, y)
    k = max(2, min(folds, int(np.bincount(y).min())))
    scores = []
    for train, held in RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed).split(gap, y):
        svm = OneVsAllLinearSVM(C=1.0, normalize="l2", n_jobs=1).fit(gap[train], y[train])
        scores.append(float((svm.predict(gap[held]) == y[held]).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def score_dataset(name: str, root: Path, geometry: tuple[str, str], cache: Path, base: ExtractOptions,
                  per_class: int | None = None) -> CvScore:
    resize, tta = geometry
    limit = "" if per_class is None else f"__{per_class}pc"
    output = cache / f"{name}__train{limit}__{resize}__{tta}.h5"
    started = time.perf_counter()
    run_job(train_job(name, root, output, replace(base, resize=resize, tta=tta), per_class))
    seconds = time.perf_counter() - started
    with FeatureFile(output) as features:
        mean, std = cv_accuracy(features.gap[:], features.labels[:])
        return CvScore(mean, std, len(features), seconds)


def build_table(roots: dict[str, Path], cache: Path, base: ExtractOptions, geometries: Sequence[tuple[str, str]],
                per_class: int | None = None) -> tuple[list[list[str]], str]:
    """One row per geometry, one column per dataset, and the default the rule picks."""
    scores: dict[tuple[tuple[str, str], str], CvScore] = {}
    for name, root in roots.items():  # dataset by dataset, so the log is useful while it runs
        for geometry in geometries:
            result = score_dataset(name, root, geometry, cache, base, per_class)
            log.info("%s %s: %.4f +- %.4f (%d train images, %.0f s)", name, label(geometry), result.mean,
                     result.std, result.n_images, result.seconds)
            scores[(geometry, name)] = result
    rows = [["geometry", *(f"{name} ({SAMPLES[name]})" for name in roots), "mean"]]
    means = {g: float(np.mean([scores[(g, n)].mean for n in roots])) for g in geometries}
    for g in geometries:
        cells = [f"{100 * scores[(g, n)].mean:.2f} ± {100 * scores[(g, n)].std:.2f} (n={scores[(g, n)].n_images})"
                 for n in roots]
        rows.append([label(g), *cells, f"{100 * means[g]:.2f}"])
    best = max((g for g in geometries if g[1] == "none"), key=lambda g: means[g])
    return rows, best[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/results/features/geometry_cv"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--model", default=None, help="backbone (default: featkit's)")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=None,
                        help="at most the first N training images of each class (a slow machine)")
    parser.add_argument("--datasets", nargs="+", default=list(SAMPLES), choices=list(SAMPLES))
    parser.add_argument("--no-flip", action="store_true", help="leave out the flip TTA row")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    roots = {name: args.data_dir / SAMPLES[name] for name in args.datasets if (args.data_dir / SAMPLES[name]).is_dir()}
    geometries = [g for g in GEOMETRIES if not (args.no_flip and g[1] == "flip")]
    if not roots:
        print(f"geometry_cv: error: no sample dataset under {args.data_dir}", file=sys.stderr)
        return 2
    base = ExtractOptions(image_size=args.image_size, workers=0, overwrite=False)
    if args.model:
        base = replace(base, model=args.model)
    args.cache.mkdir(parents=True, exist_ok=True)
    try:
        rows, best = build_table(roots, args.cache, base, geometries, args.per_class)
    except FeatkitError as exc:
        print(f"geometry_cv: error: {exc}", file=sys.stderr)
        return 2
    subset = "" if args.per_class is None else f"; at most {args.per_class} training images per class"
    note = (f"Train-split cross-validation ({base.model}, C=1, L2-normalised GAP; repeated stratified 5-fold, "
            f"4 repeats, accuracy % mean ± std over the splits; n = training images{subset}). "
            "No test image is read. "
            f"Rule fixed before the run: the default resize is the best mean without TTA -> **{best}**.")
    print(write_table(rows, args.out, "geometry_cv", note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
