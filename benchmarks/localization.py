"""Localization methods against the baselines, threshold chosen on the train split only.

For every store (a features.h5 written with ``--maps`` and the svm.h5 trained
on its train split) and every method of :mod:`featkit.cam.methods`, the box
threshold is chosen on the train images (:func:`featkit.cam.calibration.calibrate`;
the paper's ``cam`` keeps its a-priori 20 %), then the test images are scored
once at that setting. Baselines on the same test images: a centred box of
half the area, the full image, and the backbone head's top-1 CAM (the
paper's rule, a-priori 20 %; class-agnostic where the head does not know the
dataset's classes). ``--oracle`` adds MaxBoxAcc / MaxBoxAccV2, whose
threshold is picked on the test images themselves (labelled oracle).

Writes ``localization.md``, ``localization.csv`` (one row per store x method,
plus per-class rows) and ``localization_calibration.png`` (train accuracy
against threshold, the curves the thresholds were chosen from).

Usage (stores built with ``featkit extract ... --maps [--image-size 448]`` and ``featkit svm-train``)::

    python -m benchmarks.localization --store cub224=cub.h5,svm.h5 --store cub448=cub448.h5,svm448.h5 \\
        --out benchmarks/results
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featkit.cam import CamOptions, localize
from featkit.cam.calibration import Calibration, calibrate
from featkit.cam.methods import CLASS_AGNOSTIC, GRADIENT_METHODS, method_names
from featkit.features import FeatureFile
from featkit.linear import LinearClassifier, classifier_for, split_rows
from featkit.linear.protocol import train_svm

DEFAULT_METHODS = ("cam", "cam-positive", "objectness", "cam-objectness", "cam-objectness-mean",
                   "foreground", "foreground-class", "cam-foreground")


def redrawn_splits(features: FeatureFile, seed: int = 0) -> np.ndarray:
    """(N, 1) split table: each class's images drawn half train, half test (seeded).

    For samples whose protocol puts every image in train (Caltech-101 with 10
    images per class draws 30 for training): the SVM is then trained on the
    train half here, and only the test half is scored.
    """
    rng = np.random.default_rng(seed)
    table = np.full((len(features), 1), "", dtype=object)
    labels = features.labels
    for c in np.unique(labels[labels >= 0]):
        members = rng.permutation(np.flatnonzero(labels == c))
        table[members[: (len(members) + 1) // 2], 0] = "train"
        table[members[(len(members) + 1) // 2 :], 0] = "test"
    return table


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}"


def run_store(name: str, features_path: Path, svm_path: Path | None, methods: Sequence[str],
              oracle: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Calibration]]:
    """Summary rows (one per method and baseline), per-class rows and the calibrations of one store.

    ``svm_path`` None: the store has no test split; its images are redrawn half train / half test per
    class (:func:`redrawn_splits`) and the SVM is trained on that train half here.
    """
    rows: list[dict[str, Any]] = []
    per_class: list[dict[str, Any]] = []
    chosen: dict[str, Calibration] = {}
    with FeatureFile(features_path) as features:
        if svm_path is None:
            table = redrawn_splits(features)
            estimator, _ = train_svm(features, splits=table)
            svm = LinearClassifier.from_estimator(estimator, features.classes)
            train, test = np.flatnonzero(table[:, 0] == "train"), np.flatnonzero(table[:, 0] == "test")
        else:
            svm = classifier_for(features, svm_path)
            test, train = split_rows(features, "test"), split_rows(features, "train")
        size = f"{int(features.attrs['input_size'])} px"
        reports = {}
        for method in methods:
            options = CamOptions(method=method)
            start = time.perf_counter()
            calibration = None if method == "cam" else calibrate(features, svm, train, options)
            fit_seconds = time.perf_counter() - start
            start = time.perf_counter()
            report = localize(features, svm, test, cam_options=options, sweep=oracle, calibration=calibration)
            seconds = time.perf_counter() - start
            reports[method] = report
            if calibration is not None:
                chosen[f"{name} {method}"] = calibration
            s = report.summary
            rows.append({"store": name, "size": size, "method": method, "threshold": s["threshold"],
                         "chosen_on": s["threshold_chosen_on"], "n_test": s["n_images"],
                         "gt_known": s["gt_known_loc"], "top1_loc": s["top1_loc"],
                         "top1_cam_any_class": s["top1_cam_loc"], "oracle_max_box_acc_v2": s.get("max_box_acc_v2"),
                         "boxes_per_s": round(s["n_images"] / seconds, 1),
                         "train_accuracy": None if calibration is None else calibration.accuracy,
                         "calibrate_s": None if calibration is None else round(fit_seconds, 1)})
        candidates = [r for r in rows if r["store"] == name and r.get("train_accuracy") is not None
                      and r["method"] not in CLASS_AGNOSTIC]
        if candidates:
            best = max(candidates, key=lambda r: r["train_accuracy"])  # first of equals: the listed order
            rows.append({**best, "method": f"best class-specific, chosen on train: {best['method']}"})
        first = reports[methods[0]].summary
        for label, key in (("centre box (half the area)", "center_baseline"), ("full image", "full_image_baseline")):
            rows.append({"store": name, "size": size, "method": label, "gt_known": first[key],
                         "top1_cam_any_class": first[key], "n_test": first["n_images"], "chosen_on": "a priori"})
        head_report = None
        if features.head() is not None:
            head_report = localize(features, classifier_for(features, None), test, sweep=False)
            head = head_report.summary
            rows.append({"store": name, "size": size, "method": "head CAM (top-1 ImageNet class, paper rule)",
                         "threshold": head["threshold"], "chosen_on": "a priori", "n_test": head["n_images"],
                         "gt_known": head["gt_known_loc"], "top1_cam_any_class": head["top1_cam_loc"]})
        classes = features.classes
        if len(classes) <= 20:
            for class_name in classes:
                for method, report in reports.items():
                    mine = [r for r in report.per_image if r["true_class"] == class_name]
                    if not mine:
                        continue
                    per_class.append({"store": name, "class": class_name, "method": method, "n": len(mine),
                                      "gt_known": np.mean([r["hit"] for r in mine]),
                                      "centre": np.mean([r["center_hit"] for r in mine]),
                                      "full": np.mean([r["full_hit"] for r in mine]),
                                      "head": None if head_report is None else np.mean(
                                          [r["top1_iou"] >= 0.5 for r in head_report.per_image
                                           if r["true_class"] == class_name])})
    return rows, per_class, chosen


def write_outputs(out: Path, rows: list[dict[str, Any]], per_class: list[dict[str, Any]],
                  chosen: dict[str, Calibration], stem: str = "localization") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = ["# Localization: methods against baselines (test split; thresholds chosen on train)", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `python -m benchmarks.localization` "
             f"(load average {load} on this machine while it ran: boxes/s and seconds are rough). Learned methods "
             "(foreground*) fit their SVM on the train split's boxes; their threshold comes from 2-fold "
             "cross-fitting on train. The 'best class-specific' row is the class-specific method with the highest "
             "TRAIN accuracy (never test).", "",
             "| store | size | method | threshold (chosen on) | GT-known | top-1 loc. | top-1 map, any class | "
             "oracle MaxBoxAccV2 | train acc. (chosen there) | fit + threshold s | boxes/s |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        threshold = f"{r['threshold']:g} ({r['chosen_on']})" if r.get("threshold") is not None else r["chosen_on"]
        lines.append(f"| {r['store']} | {r['size']} | {r['method']} | {threshold} | {_pct(r.get('gt_known'))} | "
                     f"{_pct(r.get('top1_loc'))} | {_pct(r.get('top1_cam_any_class'))} | "
                     f"{_pct(r.get('oracle_max_box_acc_v2'))} | {_pct(r.get('train_accuracy'))} | "
                     f"{r.get('calibrate_s') or ''} | {r.get('boxes_per_s', '')} |")
    if per_class:
        lines += ["", "## Per class (GT-known of each method; every baseline on the same images: centre box, "
                  "full image, the head's top-1 CAM)", "",
                  "| store | class | method | images | GT-known | centre box | full image | head CAM |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {c['store']} | {c['class']} | {c['method']} | {c['n']} | {_pct(c['gt_known'])} | "
                  f"{_pct(c['centre'])} | {_pct(c['full'])} | {_pct(c.get('head'))} |" for c in per_class]
    md = out / f"{stem}.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = out / f"{stem}.csv"
    columns = ["store", "size", "method", "class", "threshold", "chosen_on", "n_test", "n", "gt_known", "top1_loc",
               "top1_cam_any_class", "oracle_max_box_acc_v2", "train_accuracy", "calibrate_s", "boxes_per_s", "centre",
               "full", "head"]
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in [*rows, *per_class]:
            writer.writerow({k: record.get(k, "") for k in columns})
    written = [md, table]
    if chosen:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, calibration in chosen.items():
            ax.plot(calibration.grid, calibration.curve, label=f"{label} (chose {calibration.options.threshold:g})")
        ax.set_xlabel("box threshold (fraction of the map's max)")
        ax.set_ylabel("train GT-known accuracy (IoU ≥ 0.5)")
        ax.set_title("Threshold curves on the TRAIN images (the test split is not used)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        plot = out / f"{stem}_calibration.png"
        fig.savefig(plot, dpi=110)
        plt.close(fig)
        written.append(plot)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", required=True, metavar="NAME=FEATURES.h5[,SVM.h5]",
                        help="without SVM.h5: a store with no test split, redrawn half train / half test per class")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, of {', '.join(m for m in method_names() if m not in GRADIENT_METHODS)}")
    parser.add_argument("--name", default="localization", help="output file stem (NAME.md, NAME.csv, ...)")
    parser.add_argument("--oracle", action="store_true", help="also the MaxBoxAcc sweep (threshold picked on test)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows, per_class, chosen = [], [], {}
    for spec in args.store:
        name, _, files = spec.partition("=")
        features_path, _, svm_path = files.partition(",")
        r, c, k = run_store(name, Path(features_path), Path(svm_path) if svm_path else None, methods, args.oracle)
        rows += r
        per_class += c
        chosen.update(k)
        print(f"{name}: done", flush=True)
    for path in write_outputs(Path(args.out), rows, per_class, chosen, args.name):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
