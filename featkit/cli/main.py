"""The ``featkit`` command: verbs that chain through files.

User mistakes (FeatkitError, bad arguments) print one line and exit 2; an
interrupt says how to resume and exits 130. Only this module draws progress
bars and tables; the library logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import numpy as np

from featkit import __version__
from featkit.cli.flags import to_flags
from featkit.errors import FeatkitError
from featkit.outputs import check_output_file, check_output_folder, jsonable, removed_on_failure, write_text

if TYPE_CHECKING:
    from featkit.cam import CamOptions
    from featkit.cam.calibration import Calibration
    from featkit.data import Dataset
    from featkit.features import FeatureFile
    from featkit.linear import Metrics
    from featkit.linear.classifier import LinearClassifier
    from featkit.linear.svm import OneVsAllLinearSVM

log = logging.getLogger("featkit")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return self._default_text(action.help or "", action)

    @staticmethod
    def _default_text(text: str, action: argparse.Action) -> str:
        if (action.default is None or action.default is False or action.default == argparse.SUPPRESS
                or "default" in text or not action.option_strings or isinstance(action.default, list)):
            return text
        default = ",".join(f"{v:g}" for v in action.default) if isinstance(action.default, tuple) else action.default
        return f"{text} (default: {default})" if text else f"(default: {default})"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block) and exits 2."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """An option given without help still shows its default in --help."""
        action = super().add_argument(*args, **kwargs)
        if action.help is None and action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            action.help = _HelpFormatter._default_text("", action)
        return action

    def parse_args(self, args: Sequence[str] | None = None, namespace: None = None) -> argparse.Namespace:  # type: ignore[override]
        """An unknown option is reported by the verb it was given to (``featkit cam: error: ...``)."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            verb = self._verbs.get(getattr(parsed, "command", None) or "", self) if hasattr(self, "_verbs") else self
            verb.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


PROGRESS_LINE_EVERY_S = 30.0
"""Seconds between two progress lines when stderr is not a terminal (batch-job logs)."""


def _progress_bar(desc: str, unit: str = "img") -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """Progress on stderr driven by ``(done, total)`` callbacks (the library only calls back).

    A tqdm bar on a terminal; otherwise (a batch job's log) one plain line
    every :data:`PROGRESS_LINE_EVERY_S` seconds and one when the work is
    done, with done/total and the speed of this run, so a log shows how fast
    it went.
    """
    if not sys.stderr.isatty():
        return _progress_lines(desc, unit)
    from tqdm import tqdm

    bar: dict[str, tqdm] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, initial=done, desc=desc, unit=unit, dynamic_ncols=True,
                              file=sys.stderr)
        else:
            bar["bar"].update(done - bar["bar"].n)

    def close() -> None:
        if "bar" in bar:
            bar["bar"].close()

    return update, close


def _progress_lines(desc: str, unit: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """Plain ``desc: done/total unit (pct), rate unit/s, elapsed`` lines for a non-terminal stderr."""
    import time

    state: dict[str, float] = {}

    def line(done: int, total: int, final: bool) -> None:
        elapsed = time.monotonic() - state["t0"]
        rate = (done - state["first"]) / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * done / total:.1f} %)" if total else ""
        end = " done" if final else ""
        print(f"{desc}: {done}/{total} {unit}{pct}, {rate:.1f} {unit}/s, {elapsed:.0f} s{end}",
              file=sys.stderr, flush=True)

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        first_call = "t0" not in state
        if first_call:  # where the run starts: a resumed run's speed counts only its own rows
            state.update(t0=now, first=done, last=now)
        state.update(done=done, total=total)
        if not first_call and now - state["last"] >= PROGRESS_LINE_EVERY_S:
            state["last"] = now
            line(done, total, final=False)

    def close() -> None:
        # Only a finished run ends with a line: a failed one says why in its one error line, and a run with
        # nothing to do (already complete) has no speed to report.
        if "t0" in state and state["first"] < state["done"] >= state["total"]:
            line(int(state["done"]), int(state["total"]), final=True)

    return update, close


# ---------------------------------------------------------------- verbs


def _cmd_models(args: argparse.Namespace) -> int:
    if args.timm is not None:
        return _list_timm_models(args)
    from featkit.models import DEFAULT_BACKBONE, backbone_names, get_backbone_spec

    rows = [("name", "K", "stride", "input", "head", "weights", "available")]
    records = []
    for name in backbone_names():
        spec = get_backbone_spec(name)
        if not spec.listed:
            continue
        available = spec.default_weights_available()
        mark = "yes" if available else "no (--weights PATH)"
        label = f"{name} (default)" if name == DEFAULT_BACKBONE else name
        rows.append((label, str(spec.channels), str(spec.stride), str(spec.input_size), spec.head or "-",
                     spec.weights_source, mark))
        records.append({"name": name, "default": name == DEFAULT_BACKBONE, "channels": spec.channels,
                        "stride": spec.stride, "input_size": spec.input_size, "head": spec.head,
                        "weights_source": spec.weights_source, "weights_available": available,
                        "mean": list(spec.mean), "std": list(spec.std)})
    return _emit(args, records, rows, "timm CNNs too: --model timm:NAME (featkit models --timm PATTERN lists them)")


def _list_timm_models(args: argparse.Namespace) -> int:
    """``featkit models --timm [PATTERN]``: the timm models ``--model timm:NAME`` takes."""
    from featkit.models.timm_backbones import PROBE_AT_MOST, timm_models

    found = timm_models(args.timm or "*")
    rows = [("name", "K", "stride", "input", "interpolation")]
    rows += [(f"timm:{m.name}", str(m.channels or "?"), str(m.stride or "?"), str(m.input_size), m.interpolation)
             for m in found]
    records = [{"name": f"timm:{m.name}", "channels": m.channels or None, "stride": m.stride or None,
                "input_size": m.input_size, "interpolation": m.interpolation} for m in found]
    note = (f"{len(found)} models with a spatial feature map" +
            (f"; K and stride are measured for a pattern matching at most {PROBE_AT_MOST}" if len(found) > PROBE_AT_MOST
             else ""))
    return _emit(args, records, rows, note)


def _emit(args: argparse.Namespace, records: object, rows: Sequence[Sequence[str]], note: str = "") -> int:
    """The verb's result: a JSON document with --json, else the table (and a note line)."""
    if getattr(args, "json", False):
        import json

        print(json.dumps(jsonable(records), indent=2, allow_nan=False))
        return 0
    _print_table(rows)
    if note:
        print(note)
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from featkit.data import load_manifest, manifest_names

    rows = [("name", "dataset", "protocol", "metric", "paper (GoogLeNet-GAP)")]
    records = []
    for name in manifest_names():
        m = load_manifest(name)
        p = m.protocol
        if p.kind == "random":
            test = f"{p.test_per_class} test" if p.test_per_class else "rest test"
            protocol = f"{p.train_per_class} train/class, {test}, {p.folds} folds"
        else:
            protocol = p.kind if p.official_folds == 1 else f"official, {p.official_folds} partitions"
        paper = m.paper.get("googlenet_gap", m.paper.get("full_image_googlenet_gap", "-"))
        rows.append((name, m.title, protocol, m.metric, str(paper)))
        records.append({"name": name, "title": m.title, "protocol": protocol, "metric": m.metric,
                        "paper_googlenet_gap": None if paper == "-" else paper, "layout": " ".join(m.layout.split()),
                        "class_order": m.class_order})
    if args.json:
        return _emit(args, records, rows)
    _print_table(rows)
    if args.verbose:
        for name in manifest_names():
            m = load_manifest(name)
            print(f"\n{name}: {m.title}\n  layout: {' '.join(m.layout.split())}\n  classes: {m.class_order}")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from featkit.features import ExtractOptions, extract

    sharding = {"rank": args.rank, "world_size": args.world_size} if args.world_size != 1 else {}
    options = ExtractOptions(
        model=args.model, weights=args.weights, image_size=args.image_size, batch_size=args.batch_size,
        workers=args.workers, device=args.device, maps=args.maps, on_error=args.on_error,
        overwrite=args.overwrite, precision=args.precision, moved_root=args.moved_root, resize=args.resize,
        tta=args.tta, layer=args.layer, exif_transpose=args.exif_transpose, **sharding,
    )
    options.validate()
    dataset = _extract_dataset(args)
    update, close = _progress_bar(f"extract {dataset.manifest.name}")
    try:
        result = extract(dataset, args.output, options, progress=update)
    finally:
        close()
    if result.rows_written == 0:
        print(f"{result.path} is already complete ({result.n_images} images); nothing to do")
    else:
        resumed = f" (resumed at image {result.resumed_from})" if result.resumed_from else ""
        print(f"wrote {result.path}: {result.n_images} images{resumed}")
    if result.failed:
        print(f"{len(result.failed)} unreadable images were skipped and recorded (status 2):", file=sys.stderr)
        for line in result.failed[:10]:
            print(f"  {line}", file=sys.stderr)
    return 0


def _extract_dataset(args: argparse.Namespace) -> Dataset:
    """The dataset ``extract`` reads: --dataset, else the detected layout (said in one line), with --holdout."""
    from featkit.data import detect_layout, open_dataset

    name = args.dataset
    if name is None:
        found = detect_layout(args.root)
        name = found.name
        print(f"detected layout '{name}' at {args.root}: {found.reason} (--dataset NAME to choose another)")
    dataset = open_dataset(name, args.root)
    if args.holdout is not None:
        dataset = dataset.with_holdout(args.holdout, folds=args.folds or 1, seed=args.seed)
        print(f"split: {dataset.protocol.describe()} (recorded in {args.output})")
    elif args.folds is not None:
        raise FeatkitError("--folds K draws K random holdout splits; give --holdout FRACTION with it")
    elif dataset.protocol.kind == "none" and not any(r.split for r in dataset.records()):
        print(f"note: {dataset.manifest.title} has no train/test split; add --holdout 0.25 to hold out a "
              "stratified quarter of each class, so svm-train and svm-eval can run")
    return dataset


def _cmd_merge(args: argparse.Namespace) -> int:
    from featkit.features.distributed import merge_shards

    path = merge_shards([Path(s) for s in args.shards], Path(args.output), overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def _cmd_units(args: argparse.Namespace) -> int:
    from featkit.experiments.units import rank_units, render_units
    from featkit.features import FeatureFile
    from featkit.linear import classifier_for

    with removed_on_failure(args.output):
        if args.output:
            check_output_folder(args.output)
        with FeatureFile(args.features) as features:
            classifier = classifier_for(features, args.svm)
            reports = rank_units(classifier, args.class_name, features, args.top_units, args.images)
            rows = [("unit", "w_k^c", "top images (GAP activation)")]
            paths = features.paths
            for r in reports:
                tops = ", ".join(f"{Path(paths[i]).name} ({a:.2f})" for i, a in zip(r.rows[:3], r.activations))
                rows.append((str(r.unit), f"{r.weight:+.4f}", tops))
            _print_table(rows)
            if args.output:
                index = render_units(features, reports, args.class_name, Path(args.output), args.root)
                print(f"wrote {index}")
        return 0


def _cmd_crops(args: argparse.Namespace) -> int:
    from featkit.experiments.crops import crop_accuracy, extract_crops
    from featkit.features import ExtractOptions, FeatureFile
    from featkit.linear import classifier_fold, classifier_for, evaluate

    options = ExtractOptions(batch_size=args.batch_size, workers=args.workers, device=args.device,
                             overwrite=args.overwrite, on_error="fail")
    options.validate()
    check_output_file(args.output, existing="allow", example="crops.h5", inputs=[args.features, args.svm])
    with FeatureFile(args.features) as features:
        classifier = classifier_for(features, args.svm)
        args.fold = classifier_fold(classifier, args.fold)
        full = evaluate(classifier, features, None, args.fold)
        calibration = _calibrations(features, classifier, args, [args.method]).get(args.method) \
            if args.boxes == "cam" else None
        if calibration is not None:  # the crops of the test split are scored: none may have chosen the threshold
            from featkit.cam.calibration import refuse_calibration_rows
            from featkit.linear import split_rows

            refuse_calibration_rows(calibration, features, split_rows(features, "test", args.fold),
                                    f"test images of fold {args.fold} the crops are scored on")
        update, close = _progress_bar(f"crops ({args.boxes} boxes)")
        try:
            path = extract_crops(args.root, features, classifier, args.output, args.boxes, options,
                                 cam_options=_cam_options(args), progress=update, calibration=calibration)
        finally:
            close()
    metrics = crop_accuracy(path, fold=args.fold)
    print(f"wrote {path}")
    print(f"  full image  accuracy {100 * full.accuracy:6.2f} %  ({full.n_images} test images of fold {args.fold}, "
          f"{args.svm})")
    print(f"  {args.boxes:<3} crops   accuracy {100 * metrics.accuracy:6.2f} %  (SVM retrained on the crops)")
    return 0


def _cam_options(args: argparse.Namespace) -> CamOptions:
    from featkit.cam import CamOptions

    threshold = 0.2 if args.threshold is None else args.threshold
    return CamOptions(normalization=args.normalization, threshold=threshold, weights=args.cam_weights,
                      method=args.method, layer=getattr(args, "layer", "last"), close=args.close,
                      scales=args.scales, enhance=args.enhance)


def _calibration_rows(features: FeatureFile, args: argparse.Namespace, method: str) -> tuple[np.ndarray, str] | None:
    """Rows (and their split) to choose ``method``'s threshold on, or None for the a-priori threshold.

    ``auto``: the paper's CAM keeps its a-priori 20 % (the reproduction stays
    untouched), a threshold given by hand is kept, every other method is
    calibrated on the train split when that split has boxes; the learned
    methods always are. A split name calibrates on that split (``test`` to
    score ``train``): the scored rows are refused where they are calibration
    images, so the split must be another one than the scored.
    """
    from featkit.cam.methods import LEARNED_METHODS
    from featkit.linear import split_rows

    mode = args.calibrate
    if method in LEARNED_METHODS:
        if mode == "none" or args.threshold is not None:
            raise FeatkitError(f"method {method!r} learns where objects are from a split's boxes (never the "
                               "scored one) and chooses its threshold there (by cross-fitting); use "
                               "calibrate='train' and leave the threshold unset")
        mode = "train" if mode == "auto" else mode
    if mode == "none" or (mode == "auto" and (method == "cam" or args.threshold is not None)):
        return None
    if mode != "auto" and args.threshold is not None:
        raise FeatkitError(f"give either threshold=... or calibrate={mode!r}, not both")
    split = "train" if mode == "auto" else mode
    if not any(s for s in features.splits[:, 0]) or split not in set(features.splits[:, args.fold]):
        if mode != "auto":
            present = ", ".join(sorted({s for s in features.splits[:, args.fold] if s})) or "none"
            raise FeatkitError(f"{features.path} has no {split} split to calibrate on (splits: {present}); "
                               "pass threshold=... instead")
        return None
    rows = split_rows(features, split, args.fold)
    boxes = features.boxes_of()
    if not any(len(boxes[int(r)]) for r in rows):
        if mode != "auto":
            raise FeatkitError(f"no {split} image of {features.path} has a box to calibrate on; pass threshold=...")
        return None
    return rows, split


def _calibrations(
    features: FeatureFile, classifier: LinearClassifier, args: argparse.Namespace, methods: list[str]
) -> dict[str, Calibration]:
    """Each method's setting chosen on the train split's boxes (see :func:`_calibration_rows`), by name."""
    from dataclasses import replace

    from featkit.cam.calibration import calibrate

    out: dict[str, Calibration] = {}
    base = _cam_options(args)
    for name in methods:
        chosen = _calibration_rows(features, args, name)
        if chosen is not None:
            rows, split = chosen
            out[name] = calibrate(features, classifier, rows, replace(base, method=name), split=split,
                                  root=args.root, device=args.device)
    return out


def _select_rows(features: FeatureFile, args: argparse.Namespace) -> np.ndarray:
    """Rows named by --images (file names or glob patterns), else the split's first --limit rows."""
    import fnmatch

    from featkit.linear import eval_split, split_rows

    if args.limit < 0:
        raise FeatkitError(f"limit must be 0 (all images) or a positive count, got {args.limit}")
    paths = features.paths
    if args.images:
        chosen = [i for i, p in enumerate(paths)
                  if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(Path(p).name, pat) or p == pat
                         for pat in args.images)]
        if not chosen:
            raise FeatkitError(f"no image of {features.path} matches {' '.join(args.images)}; "
                               "give file names or glob patterns such as '*Albatross*'")
        return np.asarray(chosen[: args.limit] if args.limit else chosen)
    if not any(s for s in features.splits[:, 0]):
        rows = np.flatnonzero(features.status == 1)
    else:
        rows = split_rows(features, args.split or eval_split(features, args.fold), args.fold)
    return rows[: args.limit] if args.limit else rows


def _cmd_cam(args: argparse.Namespace) -> int:
    from featkit.features import FeatureFile
    from featkit.linear import classifier_fold, classifier_for
    from featkit.viz import render_cams

    with removed_on_failure(args.output):
        check_output_folder(args.output)
        if args.limit < 0:
            raise FeatkitError(f"limit must be 0 (all images) or a positive count, got {args.limit}")
        with FeatureFile(args.features) as features:
            classifier = classifier_for(features, args.svm)
            args.fold = classifier_fold(classifier, args.fold)
            limit, args.limit = args.limit, 0
            every = _select_rows(features, args)
            args.limit = limit
            rows = every[:limit] if limit else every
            methods = [name.strip() for name in args.method.split(",") if name.strip()] or ["cam"]
            args.method = methods[0]
            calibrations = _calibrations(features, classifier, args, methods)
            _note_fitted_images(features, classifier, rows, calibrations)
            update, close = _progress_bar("cam")
            try:
                index = render_cams(features, classifier, rows, Path(args.output), which=args.class_name,
                                    cam_options=_cam_options(args), root=args.root, save_raw=args.raw,
                                    device=args.device, progress=update, methods=methods, calibrations=calibrations)
            finally:
                close()
        print(f"wrote {len(rows)} CAM pictures and {index}")
        if len(rows) < len(every):
            print(f"  the first {len(rows)} of the {len(every)} selected images (--limit {args.limit}); --limit 0 draws "
                  "them all")
        return 0


def _note_fitted_images(features: FeatureFile, classifier: LinearClassifier, rows: np.ndarray,
                        calibrations: dict[str, Calibration]) -> None:
    """Pictures are not scores, so ``cam`` draws any image; it says which were fitted on (not held out)."""
    from featkit.features.overlap import overlap
    from featkit.linear.protocol import training_overlap

    trained = training_overlap(classifier, features, rows)
    if trained is not None and trained.refused.size:
        print(f"note: {trained.refused.size} of the {len(rows)} images drawn are training images of "
              f"{classifier.source}: their CAMs and boxes are not held out")
    for name, calibration in calibrations.items():
        if calibration.images is not None and (seen := overlap(calibration.images, features, rows).refused).size:
            print(f"note: {seen.size} of the {len(rows)} images drawn are the {calibration.split} images method "
                  f"{name!r} chose its threshold on: their boxes are not held out")


def _cmd_localize(args: argparse.Namespace) -> int:
    from featkit.cam import localize
    from featkit.features import FeatureFile
    from featkit.linear import classifier_fold, classifier_for
    from featkit.viz import threshold_curve_plot

    if args.output:
        check_output_folder(args.output)
    with FeatureFile(args.features) as features:
        classifier = classifier_for(features, args.svm)
        args.fold = classifier_fold(classifier, args.fold)
        args.images, args.limit = [], 0
        rows = _select_rows(features, args)
        boxes = features.boxes_of()
        if not any(len(boxes[int(r)]) for r in rows):
            return _localize_unscored(features, classifier, rows, args)
        options = _cam_options(args)
        calibration = _calibrations(features, classifier, args, [args.method]).get(args.method)
        update, close = _progress_bar("localize")
        try:
            report = localize(features, classifier, rows, cam_options=options, root=args.root,
                              sweep=(args.sweep or args.protocol == "wsol") and not args.no_sweep, multi_threshold=args.multi_threshold, device=args.device,
                              protocol=args.protocol, cam_curve_interval=args.cam_curve_interval, progress=update,
                              calibration=calibration)
        finally:
            close()
    if args.json:
        _emit(args, {"summary": report.summary, "per_class": report.per_class, "curves": report.curves_dict()}, [])
    else:
        print(report.to_markdown())
    if args.output:
        out = Path(args.output)
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:  # the reports are one set: a failed write removes the ones this run wrote
            written.append(report.write_csv(out / "localization.csv"))
            written.append(report.write_json(out / "localization.json"))
            written.append(write_text(out / "localization.md", report.to_markdown()))
            if report.curves is not None:
                written.append(threshold_curve_plot(report.curves, out / "threshold_curve.png"))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            if created and not any(out.iterdir()):
                out.rmdir()
            raise
        print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr if args.json else sys.stdout)
    return 0


def _localize_unscored(features: FeatureFile, classifier: LinearClassifier, rows: np.ndarray,
                       args: argparse.Namespace) -> int:
    """``localize`` on images without ground-truth boxes (your own photos): the predicted class's CAM box of
    each image, printed (and written to boxes.csv with -o); there is nothing to score them against."""
    import csv
    import io

    from featkit.experiments.crops import predicted_class_boxes

    boxes = predicted_class_boxes(features, classifier, rows, _cam_options(args), root=args.root)
    predicted = classifier.decision_function(features.gap[rows]).argmax(axis=1)
    paths = features.paths
    table = [(paths[int(r)], classifier.classes[int(c)], *(f"{v:.1f}" for v in box))
             for r, c, box in zip(rows, predicted, boxes)]
    if args.json:
        _emit(args, {"summary": None, "boxes": [{"path": p, "predicted_class": c, "box": [float(v) for v in b]}
                                                for p, c, *b in table]}, [])
    else:
        print(f"no ground-truth boxes in the {len(rows)} images of {features.path}: no localization score; "
              "the predicted class's CAM box of each image (pixels):")
        _print_table([("image", "predicted class", "x0", "y0", "x1", "y1"), *table[:10]])
    if len(table) > 10 and not args.json:
        print(f"... {len(table) - 10} more" + ("" if args.output else " (-o FOLDER writes them all to boxes.csv)"))
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        text = io.StringIO()
        csv.writer(text).writerows([("path", "predicted_class", "x0", "y0", "x1", "y1"), *table])
        write_text(out / "boxes.csv", text.getvalue())  # atomic, after a room check
        print(f"wrote {out / 'boxes.csv'}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from featkit.features import FeatureFile
    from featkit.features.export import export

    with FeatureFile(args.features) as features:
        path = export(features, args.output, overwrite=args.overwrite)
        print(f"wrote {path}: {len(features)} images x {features.gap.shape[1]} features "
              f"(with labels, classes, splits, paths, sizes, status and boxes)")
    return 0


def _cmd_discover(args: argparse.Namespace) -> int:
    from featkit.experiments.discover import discover

    with removed_on_failure(args.output):
        update, close = _progress_bar("discover")
        try:
            result = discover(Path(args.positive), Path(args.negative), Path(args.output), model=args.model,
                              weights=args.weights, image_size=args.image_size, top=args.top, progress=update)
        finally:
            close()
        print(f"trained on {result.n_positive} positive and {result.n_negative} negative images "
              f"(training accuracy {100 * result.train_accuracy:.1f} %); wrote {result.index}")
        return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from featkit.features.info import describe, summary

    if args.json:
        document = summary(args.features, check=args.check)
        _emit(args, document, [])
        if document["problems"]:
            raise FeatkitError(f"{args.features} is damaged (problems listed in the JSON); re-extract it with "
                               "overwrite=True")
        return 0
    text, problems = describe(args.features, check=args.check)
    print(to_flags(text))
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise FeatkitError(f"{args.features} is damaged ({count} listed above); re-extract it with overwrite=True")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from featkit.experiments.demo import run_demo

    with removed_on_failure(args.output):
        update, close = _progress_bar("demo")
        try:
            index = run_demo(Path(args.output), model=args.model, weights=args.weights, image_size=args.image_size,
                             top=args.top, progress=update)
        finally:
            close()
        print(f"wrote {index} (open it in a browser)")
        return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from featkit.models.caffe import convert_caffe

    try:
        mean = [float(v) for v in args.mean.split(",")] if args.mean else None
    except ValueError:
        raise FeatkitError(f"--mean takes B,G,R numbers (0-255), got {args.mean!r}") from None
    r = convert_caffe(args.deploy, args.weights, args.output, args.name, mean, args.mean_file)
    what = r.name or "not a registered backbone (load it with featkit.models.caffe.load_converted)"
    print(f"wrote {r.path}: {r.net_name}, {r.layers} layers, {r.parameters / 1e6:.1f}M parameters -> {what}")
    print(f"  CAM maps '{r.feature_blob}': {r.channels} x {r.map_size[0]}x{r.map_size[1]} at {r.input_size[0]} px; "
          f"mean (B, G, R) {tuple(round(v, 3) for v in r.mean_bgr)} from {r.mean_source}")
    if r.name:
        print(f"  use: featkit extract ROOT --dataset NAME -o OUT.h5 --model {r.name}"
              + ("" if args.output is None else f" --weights {r.path}"))
    return 0


def _cmd_svm_train(args: argparse.Namespace) -> int:
    from featkit.features import FeatureFile
    from featkit.linear import check_svm_options, save_svm, train_svm

    C = _parse_C(args.C)
    check_svm_options(C, args.jobs)
    # fail before minutes of training
    out = check_output_file(args.output, overwrite=args.overwrite, example="svm.h5", inputs=[args.features])
    with FeatureFile(args.features) as features:
        svm, trained_on = train_svm(features, args.split, args.fold, C, args.normalize, args.per_class_C, args.jobs)
        save_svm(out, svm, features.classes, features, trained_on, overwrite=args.overwrite)
        print(f"wrote {out}: {len(features.classes)} classes x {svm.coef_.shape[1]} features, "
              f"{trained_on['n_images']} training images ({args.split}, fold {args.fold}), "
              f"normalize {args.normalize}")
        print(f"  {_C_choice(svm)}")
        if args.split == "test":
            print(f"note: trained on the test split (recorded in {out}); scores on the test split are not "
                  "held-out estimates")
    return 0


def _parse_C(value: str) -> float | Literal["auto"]:
    """'auto' or a finite positive float (the library's check_svm_options says what is allowed)."""
    from featkit.linear import check_svm_options

    if value == "auto":
        return "auto"
    try:
        C = float(value)
    except ValueError:
        raise FeatkitError(f"--C must be 'auto' or a finite positive number, got {value!r}") from None
    check_svm_options(C, None)
    return C


def _C_choice(svm: OneVsAllLinearSVM) -> str:
    """How C was set: fixed, or cross-validated with the rule, grid, folds, chosen C and its CV score."""
    from featkit.linear.svm import describe_C_grid

    chosen = np.unique(svm.C_)
    c_text = f"C={chosen[0]:g}" if chosen.size == 1 else f"C per class in [{chosen.min():g}, {chosen.max():g}]"
    if svm.C != "auto":
        return f"{c_text}: fixed (no cross-validation)"
    metric = "mAP" if svm.multilabel else "accuracy"
    what = "per class by its own CV average precision" if svm.per_class_C else f"shared, by CV {metric}"
    score = "" if svm.per_class_C else f"; CV {metric} at that C {100 * svm.cv_score_:.2f} %"
    return (f"{c_text}: cross-validated ({svm.cv}-fold on the training rows, {what}) over "
            f"C = {describe_C_grid(svm.C_grid_)}, rule {svm.C_rule_}{score}")


def _cmd_svm_eval(args: argparse.Namespace) -> int:
    from featkit.features import FeatureFile
    from featkit.linear import classifier_fold, classifier_for, eval_split, evaluate
    from featkit.viz import confusion_plot

    if args.confusion:
        check_output_file(args.confusion, overwrite=True, suffixes=(".png",), example="confusion.png")
    with FeatureFile(args.features) as features:
        classifier = classifier_for(features, args.svm)
        fold = classifier_fold(classifier, args.fold)
        args.split = args.split or eval_split(features, fold)
        metrics = evaluate(classifier, features, args.split, fold)
        top5 = len(classifier.classes) > 5  # with 5 classes or fewer every image is in its top 5
        if args.json:
            _emit(args, _eval_document(features, classifier, args.split, fold, metrics, top5), [])
            if args.confusion:
                confusion_plot(metrics, classifier.classes, args.confusion)
            return 0
        own = " (the SVM's training fold)" if args.fold is None and "trained_fold" in classifier.attrs else ""
        print(f"{features.path} / {classifier.source}: split {args.split}, fold {fold}{own}, {metrics.n_images} images")
        if classifier.training_note():
            print(f"  {classifier.training_note()}")
        if np.isnan(metrics.map):
            print(f"  accuracy                 {100 * metrics.accuracy:6.2f} %")
            print(f"  mean per-class accuracy  {100 * metrics.mean_per_class_accuracy:6.2f} %")
            if top5:
                print(f"  top-5 accuracy           {100 * metrics.top5:6.2f} %")
        else:
            print(f"  mean average precision   {100 * metrics.map:6.2f} %")
        if args.per_class:
            label = "AP" if not np.isnan(metrics.map) else "accuracy"
            rows = [("class", "images", label)]
            rows += [(c, str(n), f"{100 * v:.2f}") for c, n, v in metrics.per_class]
            _print_table(rows)
        if args.confusion:
            path = confusion_plot(metrics, classifier.classes, args.confusion)
            print(f"wrote {path}")
    return 0


def _eval_document(features: FeatureFile, classifier: LinearClassifier, split: str, fold: int, metrics: Metrics,
                   top5: bool) -> dict[str, object]:
    """svm-eval's numbers as JSON (fractions in [0, 1], as the library gives them; the text shows %)."""
    return {"features": str(features.path), "classifier": classifier.source, "split": split, "fold": fold,
            "n_images": metrics.n_images, "training_note": classifier.training_note() or None,
            "accuracy": metrics.accuracy, "mean_per_class_accuracy": metrics.mean_per_class_accuracy,
            "top5": metrics.top5 if top5 else None, "map": metrics.map,
            "per_class": [{"class": c, "images": n, "value": v} for c, n, v in metrics.per_class],
            "confusion": metrics.confusion}


def _cmd_protocol(args: argparse.Namespace) -> int:
    from featkit.features import FeatureFile
    from featkit.linear import eval_split, run_protocol, save_svm
    from featkit.linear.protocol import dataset_metric, kept_fold
    from featkit.linear.svmfile import load_svm

    C = _parse_C(args.C)
    if args.folds is not None and args.folds < 1:
        raise FeatkitError(f"--folds must be at least 1 (or left out for every fold), got {args.folds}")
    out = Path(args.output) if args.output else None
    kept: dict[int, LinearClassifier] = {}
    with FeatureFile(args.features) as features:
        n_folds = features.splits.shape[1] if args.folds is None else min(args.folds, features.splits.shape[1])
        if out is not None:
            if out.exists() and not out.is_dir():
                raise FeatkitError(f"-o {out} is a file; give a folder for the per-fold svm_fold<k>.h5 files")
            if not args.overwrite:  # whole folds of an earlier (killed) run are kept; anything else fails now
                for k in range(n_folds):
                    if (out / f"svm_fold{k}.h5").exists():
                        kept[k] = kept_fold(load_svm(out / f"svm_fold{k}.h5"), features, k, C, args.normalize,
                                            args.per_class_C)
            out.mkdir(parents=True, exist_ok=True)
        metric = dataset_metric(features)
        say = (lambda *a, **k: None) if args.json else print  # --json: one document at the end instead
        say(f"{features.path}: {n_folds} folds, train on 'train', score {eval_split(features)!r}, metric {metric}")
        folds: list[dict[str, object]] = []

        def fold_done(fold: int, svm: OneVsAllLinearSVM, trained_on: dict[str, object], m: Metrics) -> None:
            chosen = np.unique(svm.C_)
            c_text = f"C={chosen[0]:g}" if chosen.size == 1 else f"C in [{chosen.min():g}, {chosen.max():g}]"
            scores = _scores_text(m)
            saved = ""
            if out is not None:
                path = save_svm(out / f"svm_fold{fold}.h5", svm, features.classes, features, trained_on,
                                overwrite=args.overwrite)
                saved = f" -> {path}"
            say(f"  fold {fold}: {trained_on['n_images']} train / {m.n_images} test images, {c_text}, {scores}{saved}",
                flush=True)
            folds.append({"fold": fold, "train_images": trained_on["n_images"], "test_images": m.n_images,
                          "C": chosen, "accuracy": m.accuracy, "mean_per_class_accuracy": m.mean_per_class_accuracy,
                          "map": m.map, "svm": saved.removeprefix(" -> ") or None})

        def fold_kept(fold: int, classifier: LinearClassifier, m: Metrics) -> None:
            scores = _scores_text(m)
            print(f"  fold {fold}: kept {classifier.source} (trained by an earlier run), {m.n_images} test images, "
                  f"{scores}", flush=True)

        result = run_protocol(features, metric, n_folds, on_fold=fold_done, C=C, normalize=args.normalize,
                              per_class_C=args.per_class_C, n_jobs=args.jobs, kept=kept, on_kept=fold_kept)
    if args.json:
        return _emit(args, {"features": str(args.features), "metric": metric, "mean": result.mean, "std": result.std,
                            "per_fold": result.per_fold, "folds": folds}, [])
    spread = "mean +- std" if len(result.per_fold) > 1 else "one fold"
    print(f"{metric} over {len(result.per_fold)} folds: {result} % ({spread})")
    return 0


def _scores_text(m: Metrics) -> str:
    """One fold's scores for the protocol lines: mAP, or accuracy and mean per-class accuracy."""
    if not np.isnan(m.map):
        return f"mAP {100 * m.map:6.2f} %"
    return f"accuracy {100 * m.accuracy:6.2f} %, mean per-class {100 * m.mean_per_class_accuracy:6.2f} %"


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


# ---------------------------------------------------------------- parser


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from featkit.models import DEFAULT_BACKBONE

    p.add_argument("--model", default=DEFAULT_BACKBONE, help="backbone name (see `featkit models`)")
    p.add_argument("--weights", default=None,
                   help="local state dict .pth instead of the default weights ('random' for untrained)")
    p.add_argument("--image-size", type=int, default=None,
                   help="square input size in px (default: the backbone's; 448 gives 14x14 maps on Lite0)")


def _add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON (the same numbers) instead of text")


def _add_holdout_args(p: argparse.ArgumentParser) -> None:
    """A split for a tree or list without one (extract)."""
    p.add_argument("--holdout", type=float, default=None, metavar="FRACTION",
                   help="hold out this fraction of each class as the test split (stratified, seeded; recorded in "
                        "the file), for a tree or list without a split of its own")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="with --holdout: K random draws (one split column each; `featkit protocol` scores them all)")
    p.add_argument("--seed", type=int, default=0, help="with --holdout: seed of the first draw (default 0)")


def _add_svm_fit_args(p: argparse.ArgumentParser) -> None:
    """How the one-vs-all SVM is fitted (svm-train, protocol)."""
    p.add_argument("--C", dest="C", default="auto", help="'auto' (cross-validated on the training split) or a value")
    p.add_argument("--normalize", default="l2", choices=["l2", "none"], help="feature normalization (default l2)")
    p.add_argument("--per-class-C", action="store_true", help="choose C per class instead of one shared C")
    p.add_argument("--jobs", type=int, default=-1, help="threads training classes in parallel (-1: all cores)")


def _scales(text: str) -> tuple[float, ...]:
    """``--scales 1,1.5,2`` -> (1.0, 1.5, 2.0); argparse reports anything else in one line."""
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be positive numbers such as 1,1.5,2, got {text!r}") from None
    if not scales or any(not s > 0 or s == float("inf") for s in scales):
        raise argparse.ArgumentTypeError(f"scales must be positive numbers such as 1,1.5,2, got {text!r}")
    return scales


def _add_cam_option_args(p: argparse.ArgumentParser) -> None:
    """How CAMs become boxes (read back by :func:`_cam_options`)."""
    p.add_argument("--normalization", default="max", choices=["max", "minmax", "relu-max"],
                   help="CAM normalization before thresholding (paper: max)")
    p.add_argument("--threshold", type=float, default=None,
                   help="box threshold, fraction of max (paper and default: 0.2)")
    p.add_argument("--cam-weights", default="all", choices=["all", "positive"],
                   help="all w_k^c (paper) or only the positive ones (larger boxes: with one-vs-all SVMs "
                        "the negative weights sit on the object, not the background)")
    p.add_argument("--method", default="cam",
                   help="map to box: cam (paper, default), cam-positive, objectness (class-agnostic mean map), "
                        "cam-objectness (positive CAM gated by the mean map), cam-objectness-mean, "
                        "foreground (SVM on map cells inside vs outside the train split's boxes), "
                        "foreground-class (one such SVM per class), cam-foreground (positive CAM gated by it), "
                        "dgl (gradient x activation on --layer; runs the backbone on the images)")
    p.add_argument("--calibrate", default="auto", metavar="auto|none|SPLIT",
                   help="choose the threshold (and fit the foreground methods) on a split's boxes: SPLIT (e.g. "
                        "train, or test to score train; never the scored images), auto (train, for every method "
                        "but cam, when no --threshold is given and train has boxes) or none (--threshold or 0.2)")
    p.add_argument("--layer", default="last",
                   help="dgl only: backbone layer(s), comma-separated and fused (default last = the CAM maps)")
    p.add_argument("--close", type=int, default=0, metavar="K",
                   help="close the thresholded mask with a K x K square (pixels of the original image) before "
                        "the largest component is boxed, joining blobs split by gaps under K px (default 0: "
                        "the paper's rule)")
    p.add_argument("--scales", type=_scales, default=(1.0,), metavar="S1,S2,...",
                   help="multi-scale inputs, e.g. 1,1.5,2: the backbone runs on the image resized to each "
                        "scale x the file's input size, maps averaged on the scale-1 grid (default 1: the "
                        "file's own maps; other scales recompute from the images in the file's geometry)")
    p.add_argument("--enhance", type=float, default=0.0, metavar="ETA",
                   help="dgl only: class-aware enhancement, one step of size ETA (relative to the activations' "
                        "norm) down the gradient of the target's cross-entropy, fused with the plain map "
                        "(default 0: none)")


def build_parser() -> argparse.ArgumentParser:
    from featkit.data.geometry import DEFAULT_RESIZE, RESIZE_POLICIES, TTA_MODES

    parser = _Parser(prog="featkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"featkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    parser._verbs = sub.choices  # type: ignore[attr-defined]  # for errors about unknown options

    p = sub.add_parser("models", help="list the backbones, their K, stride, input size and weights")
    p.add_argument("--timm", nargs="?", const="*", default=None, metavar="PATTERN",
                   help="list the timm CNNs --model timm:NAME takes, matching PATTERN (e.g. 'resnet*'; needs timm)")
    _add_json_arg(p)
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("datasets", help="list the dataset layouts and their protocols")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each layout")
    _add_json_arg(p)
    p.set_defaults(func=_cmd_datasets)

    p = sub.add_parser("extract", help="GAP features (and conv maps) of a dataset into features.h5")
    p.add_argument("root", help="dataset root: an official layout, ROOT/<class>/*.jpg, ROOT/{train,val}/<class>/, "
                                "or a .csv list")
    p.add_argument("--dataset", default=None,
                   help="layout name (see `featkit datasets`; default: detected from ROOT, said in one line)")
    _add_holdout_args(p)
    p.add_argument("-o", "--output", required=True, help="features file to write or resume (.h5)")
    _add_model_args(p)
    p.add_argument("--maps", action="store_true", help="also store the last conv maps (float16), for CAMs")
    p.add_argument("--layer", default=None, metavar="NAME",
                   help="GAP features (and maps) of this inner module of the backbone body (e.g. layer3 of a timm "
                        "ResNet) instead of the last conv layer; recorded in the file; it has no head: train an SVM")
    p.add_argument("--batch-size", type=int, default=32, help="images read, run and written together (default 32)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: automatic; 0 on small CPU machines, min(4, cores) on GPU)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="autocast precision for the forward pass (recorded in the file)")
    p.add_argument("--on-error", default="fail", choices=["fail", "skip"],
                   help="unreadable image: stop (rows so far kept) or skip it (recorded in images/status)")
    p.add_argument("--resize", default=DEFAULT_RESIZE, choices=list(RESIZE_POLICIES),
                   help=f"input geometry (default {DEFAULT_RESIZE}): warp to a square, short side to --image-size "
                        "keeping the aspect ratio (long side <= 2x), or short side + centre crop")
    p.add_argument("--tta", default="none", choices=list(TTA_MODES),
                   help="flip: average the features and maps of each image and its mirror (2x the compute)")
    p.add_argument("--exif-transpose", action="store_true",
                   help="turn each photo upright by its EXIF orientation tag (as viewers show it) and map the "
                        "dataset's boxes with it; default: pixels as stored, the grid dataset annotations use")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output from another run")
    p.add_argument("--moved-root", action="store_true",
                   help="resume an output extracted from another root (the dataset moved): the images already "
                        "extracted must match their recorded fingerprints")
    p.add_argument("--rank", type=int, default=int(os.environ.get("RANK", 0)),
                   help="this process's shard (default: $RANK, set by torchrun)")
    p.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 1)),
                   help="number of shards (default: $WORLD_SIZE, set by torchrun)")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("merge", help="join the per-rank shards of a multi-process extraction into one file")
    p.add_argument("shards", nargs="+", help="shard files (out.rank0-of-N.h5 ...)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("info", help="what a features.h5 holds (and whether it is damaged)")
    p.add_argument("features")
    p.add_argument("--check", action="store_true",
                   help="also read every stored conv map (slow on big files); exit 2 when damage is found")
    _add_json_arg(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("export", help="features, labels, splits, paths and boxes of a features.h5 as .npz, "
                                      ".parquet or .csv (numpy / pandas)")
    p.add_argument("features")
    p.add_argument("-o", "--output", required=True, help="file to write: out.npz, out.parquet or out.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("demo", help="CAMs of the ImageNet head on bundled photos (offline), with an index page")
    p.add_argument("-o", "--output", default="featkit-demo", help="output folder (default: featkit-demo)")
    _add_model_args(p)
    p.add_argument("--top", type=int, default=5, help="classes per photo (default 5)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("convert", help="convert the authors' Caffe CAM models to featkit files (no Caffe needed)")
    formats = p.add_subparsers(dest="format", required=True, parser_class=_Parser, metavar="FORMAT")
    c = formats.add_parser("caffe", help="deploy .prototxt + .caffemodel -> .pth that --model NAME --weights loads")
    c.add_argument("deploy", help="deploy prototxt (text), e.g. deploy_googlenetCAM.prototxt")
    c.add_argument("weights", help="trained weights (binary .caffemodel)")
    c.add_argument("-o", "--output", default=None,
                   help="file to write (default: where --model NAME finds it without --weights)")
    c.add_argument("--name", default=None,
                   help="backbone it is for: googlenet_gap, vgg16_gap, alexnet_gap, ... (default: recognised)")
    c.add_argument("--mean", default=None, metavar="B,G,R", help="per-channel mean, 0-255 (default: 104,117,123)")
    c.add_argument("--mean-file", default=None, help="Caffe mean image (.binaryproto), averaged per channel")
    c.set_defaults(func=_cmd_convert)

    p = sub.add_parser("svm-train", help="one-vs-all linear SVMs (LIBLINEAR) on stored GAP features -> svm.h5")
    p.add_argument("features")
    p.add_argument("-o", "--output", required=True, help="svm.h5 to write")
    p.add_argument("--split", default="train", help="split to train on (default: train)")
    p.add_argument("--fold", type=int, default=0, help="fold of a random-draw protocol (default 0)")
    _add_svm_fit_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing svm.h5")
    p.set_defaults(func=_cmd_svm_train)

    p = sub.add_parser("svm-eval", help="accuracy, mean per-class accuracy, top-5 (or mAP) of an svm.h5")
    p.add_argument("features")
    p.add_argument("svm", help="svm.h5 from `featkit svm-train`, or 'head' for the backbone's own classifier")
    p.add_argument("--split", default=None,
                   help="split to score (default: test, or val in a train/val tree without test)")
    p.add_argument("--fold", type=int, default=None,
                   help="fold to score (default: the SVM's training fold; a fold sharing its training images is refused)")
    p.add_argument("--per-class", action="store_true", help="print the per-class table")
    p.add_argument("--confusion", default=None, metavar="PNG", help="write the confusion matrix picture")
    _add_json_arg(p)
    p.set_defaults(func=_cmd_svm_eval)

    p = sub.add_parser("protocol", help="train and score an SVM on every fold of the split protocol: mean +- std")
    p.add_argument("features")
    p.add_argument("-o", "--output", default=None, help="folder to keep each fold's SVM in (svm_fold<k>.h5)")
    p.add_argument("--folds", type=int, default=None, help="only the first N folds (default: all the file defines)")
    _add_svm_fit_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing svm_fold<k>.h5 files")
    _add_json_arg(p)
    p.set_defaults(func=_cmd_protocol)

    def cam_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("features")
        p.add_argument("svm", help="svm.h5 from `featkit svm-train`, or 'head' for the backbone's ImageNet head")
        p.add_argument("--split", default=None,
                       help="split to draw from (default: test, or val in a train/val tree without test)")
        p.add_argument("--fold", type=int, default=None, help="fold (default: the SVM's training fold)")
        p.add_argument("--root", default=None, help="dataset root, when it moved or to recompute maps")
        _add_cam_option_args(p)
        p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (networks run for dgl and --scales)")

    p = sub.add_parser("cam", help="CAM overlays (heatmap, predicted box red, ground truth green) and a gallery")
    cam_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--images", nargs="+", default=[], help="file names or glob patterns of images to draw")
    p.add_argument("--limit", type=int, default=24, help="at most this many images (0: all; default 24)")
    p.add_argument("--class", dest="class_name", default="gt",
                   help="gt (true class), top1, top5, or a class name (default gt)")
    p.add_argument("--raw", default="none", choices=["none", "npy", "h5"], help="also save the raw CAMs")
    p.set_defaults(func=_cmd_cam)

    p = sub.add_parser("localize", help="weakly supervised localization scores (IoU >= 0.5), sweep and baselines")
    cam_args(p)
    p.add_argument("-o", "--output", default=None, help="folder for localization.csv/.json/.md and the curve plot")
    p.add_argument("--sweep", action="store_true",
                   help="also the MaxBoxAcc/MaxBoxAccV2 threshold sweep (an oracle: best threshold on the scored "
                        "images; 100 labelling passes per image, most of localize's time); --protocol wsol implies it")
    p.add_argument("--no-sweep", action="store_true", help=argparse.SUPPRESS)  # the default since 0.x; kept for scripts
    p.add_argument("--protocol", default="featkit", choices=["featkit", "wsol"],
                   help="how the sweep scores CAMs: featkit (original image, float map; default) or wsol "
                        "(clovaai/wsolevaluation: 224 px bicubic frame, 8-bit map, contours, +1 IoU)")
    p.add_argument("--cam-curve-interval", type=float, default=None,
                   help="threshold step of the wsol sweep (default 0.01; wsolevaluation's own default is 0.001)")
    p.add_argument("--multi-threshold", action="store_true",
                   help="also score the original CAM code's two-box ILSVRC heuristic")
    _add_json_arg(p)
    p.set_defaults(func=_cmd_localize)

    p = sub.add_parser("discover", help="pattern discovery (Sec. 4.2): SVM on positive vs negative images + CAMs")
    p.add_argument("positive", help="folder of positive images")
    p.add_argument("negative", help="folder of negative images")
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_model_args(p)
    p.add_argument("--top", type=int, default=12, help="top-ranked images to draw (default 12)")
    p.set_defaults(func=_cmd_discover)

    p = sub.add_parser("crops", help="features of CAM (or ground-truth) crops, SVM retrained on them (Table 4)")
    p.add_argument("root", help="dataset root the features were extracted from")
    p.add_argument("features")
    p.add_argument("svm", help="svm.h5 whose predicted-class CAMs give the boxes")
    p.add_argument("-o", "--output", required=True, help="crops features file to write (or resume)")
    p.add_argument("--boxes", default="cam", choices=["cam", "gt"], help="CAM boxes (default) or ground truth")
    p.add_argument("--fold", type=int, default=None, help="fold (default: the SVM's training fold)")
    _add_cam_option_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="crops read, run and written together")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: automatic)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing crops file from another run")
    p.set_defaults(func=_cmd_crops)

    p = sub.add_parser("units", help="class-specific units: rank units by w_k^c and show what fires them (Sec. 5)")
    p.add_argument("features")
    p.add_argument("svm", help="svm.h5, or 'head' for the backbone's own classifier")
    p.add_argument("--class", dest="class_name", required=True, help="class name")
    p.add_argument("--top-units", type=int, default=5)
    p.add_argument("--images", type=int, default=6, help="top images per unit")
    p.add_argument("-o", "--output", default=None, help="folder for the unit pictures and index.html")
    p.add_argument("--root", default=None, help="dataset root, when the images moved since extraction")
    p.set_defaults(func=_cmd_units)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # featkit refuses images over Pillow's pixel limit itself (featkit.data.picture.open_image), in one line:
    # Pillow's raw two-line warning for them would only repeat it
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="featkit: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except FeatkitError as exc:
        print(f"featkit {args.command}: error: {to_flags(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"featkit {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
