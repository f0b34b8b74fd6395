"""Pattern discovery (paper Sec. 4.2): a linear SVM on any positive/negative image sets, then its CAMs.

The GAP features are generic enough that a linear SVM separates a concept
(a scene part, a text style, an action) from other images; the CAM of that
SVM on the top-ranked images shows where in each image the concept is.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featkit.data.base import IMAGE_SUFFIXES, ImageRecord
from featkit.errors import FeatkitError
from featkit.features.extractor import ExtractJob, ExtractOptions, Progress
from featkit.features.pipeline import run_job
from featkit.features.schema import STATUS_OK
from featkit.features.store import FeatureFile
from featkit.linear.classifier import LinearClassifier
from featkit.linear.svm import OneVsAllLinearSVM
from featkit.models import DEFAULT_BACKBONE
from featkit.outputs import atomic_output, check_output_folder
from featkit.viz.camviz import render_cams


@dataclass(frozen=True)
class DiscoverResult:
    index: Path
    n_positive: int
    n_negative: int
    train_accuracy: float
    ranking: Path


def _images(folder: Path, role: str) -> list[Path]:
    if not folder.is_dir():
        raise FeatkitError(f"{role} folder {folder} does not exist; give a folder of images")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise FeatkitError(f"{role} folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES[:4])} ...)")
    return found


def discover(
    positive: Path,
    negative: Path,
    output: Path,
    model: str = DEFAULT_BACKBONE,
    weights: str | None = None,
    image_size: int | None = None,
    top: int = 12,
    progress: Progress | None = None,
) -> DiscoverResult:
    if top < 1:
        raise FeatkitError(f"top must be at least 1, got {top}")
    pos, neg = _images(positive, "positive"), _images(negative, "negative")
    root = Path(os.path.commonpath([positive.resolve(), negative.resolve()]))
    records = [ImageRecord(str(p.resolve().relative_to(root)).replace(os.sep, "/"), 1, "train") for p in pos]
    records += [ImageRecord(str(p.resolve().relative_to(root)).replace(os.sep, "/"), 0, "train") for p in neg]
    classes = ["negative", "positive"]
    check_output_folder(output).mkdir(parents=True, exist_ok=True)
    features_path = output / "features.h5"
    splits = np.full((len(records), 1), "train", dtype=object)
    options = ExtractOptions(model=model, weights=weights, image_size=image_size, maps=True, on_error="skip")
    run_job(ExtractJob(root, records, classes, splits, "discover", features_path, options, progress))
    with FeatureFile(features_path) as features:
        ok = np.flatnonzero(features.status == STATUS_OK)
        labels = features.labels[ok]
        smallest = int(min((labels == 0).sum(), (labels == 1).sum()))
        # cross-validating C needs a few images of each side; with fewer, a fixed C=1 is the honest choice
        svm = OneVsAllLinearSVM(C="auto" if smallest >= 3 else 1.0, cv=min(3, max(smallest, 2)))
        svm.fit(features.gap[ok], labels)
        classifier = LinearClassifier.from_estimator(svm, classes, "discover-svm")
        scores = classifier.decision_function(features.gap[ok])
        margin = scores[:, 1] - scores[:, 0]
        train_accuracy = float(((margin > 0).astype(int) == labels).mean())
        order = ok[np.argsort(-margin)]
        ranking = output / "ranking.csv"
        by_row = dict(zip(ok.tolist(), margin.tolist()))
        paths = features.paths
        with atomic_output(ranking) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["rank", "path", "set", "score"])
            for rank, row in enumerate(order, 1):
                side = "positive" if features.labels[row] == 1 else "negative"
                writer.writerow([rank, paths[row], side, f"{by_row[int(row)]:.4f}"])
        index = render_cams(features, classifier, order[:top], output / "cams", which="positive", root=root)
    return DiscoverResult(index, len(pos), len(neg), train_accuracy, ranking)
