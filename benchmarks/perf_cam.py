"""CAMs + boxes per second: featkit from stored maps against torch-cam's CAM (a forward pass per image).

Both pipelines make, for the same images and the same class (the top-1 class
of the backbone's own ImageNet head, whose fc weights both use), the raw CAM
``sum_k w_k^c f_k``, upsample it to the original image and take the paper's
box (20 % of the max, largest connected component, :func:`box_from_cam`):

* featkit: ``features/maps`` read from features.h5 in batches, batched
  :func:`class_activation_maps`, :func:`upsample`, :func:`box_from_cam`;
* torch-cam: ``torchcam.methods.CAM`` hooked on the backbone (target layer
  ``body``, fc layer ``head``): decode the image, forward pass, read the CAM
  (``normalized=False``), then the same upsample and box. Also timed with 32
  images per forward pass, the best torch-cam can do.

The CAMs are checked to agree at map resolution (Pearson correlation per
image; featkit's maps are stored as float16) and the boxes by IoU.

Localization methods (featkit.cam.methods, issue 10): each stored-maps
method runs the same harness through :class:`~featkit.cam.boxer.CamBoxer`
(stored maps in batches -> ``CamBoxer.boxes`` -> boxes in original pixels)
in the same interleaved rounds, and its speed is divided by ``cam``'s of the
same round. Learned methods (foreground, foreground-class, cam-foreground)
are first fitted and calibrated once on the train split's boxes
(:func:`~featkit.cam.calibration.calibrate`; timed apart). The gradient
method dgl runs the backbone with gradients on a few images (``--dgl-images``),
at the last layer and at one inner layer (``--dgl-layer``).

Usage::

    python -m benchmarks.perf_cam                        # 128 images of the CUB sample
    python -m benchmarks.perf_cam --features cub.h5      # an existing features file written with --maps
    python -m benchmarks.perf_cam --features cub.h5 --svm cub.svm.h5   # methods with the SVM's weights
    python -m benchmarks.perf_cam --synthetic 8 --images 8 --repeats 1 --out /tmp/r   # smoke
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.perf_extract_inputs import DEFAULT_ROOT, real_images, synthetic_images
from featkit.cam.boxer import CamBoxer
from featkit.cam.boxes import box_from_cam, iou
from featkit.cam.calibration import calibrate
from featkit.cam.maps import CamOptions, class_activation_maps, upsample
from featkit.cam.methods import LEARNED_METHODS, METHODS
from featkit.data.images import load_rgb, normalize_batch
from featkit.errors import FeatkitError
from featkit.features import ExtractJob, ExtractOptions, run_job
from featkit.features.mapsource import MapSource
from featkit.features.replay import backbone_from_provenance
from featkit.features.store import FeatureFile
from featkit.linear.classifier import LinearClassifier
from featkit.linear.protocol import split_rows
from featkit.linear.svmfile import load_svm

CSV_COLUMNS = ("section", "item", "metric", "value", "unit", "notes")

STORED_METHODS: tuple[str, ...] = (*METHODS, *LEARNED_METHODS)
"""Every method that boxes stored maps: cam first (the reference of each round's ratios)."""

DGL_LAYER = "net._blocks.10"
"""Default inner layer for dgl: efficientnet_lite0's last stride-16 block (14 x 14 maps at 224 px)."""


def featkit_cams(features: FeatureFile, rows: np.ndarray, classes: np.ndarray, batch: int
                 ) -> tuple[float, np.ndarray, np.ndarray]:
    """CAMs + boxes/s from stored maps; also the map-resolution CAMs (N, h, w) and boxes (N, 4)."""
    head = features.head()
    assert head is not None
    weight = torch.from_numpy(head.weight)
    sizes = features.sizes
    cams_out, boxes = [], []
    t0 = time.perf_counter()
    for lo in range(0, len(rows), batch):
        idx = rows[lo: lo + batch]
        cams = class_activation_maps(torch.from_numpy(features.maps(idx)), weight, torch.from_numpy(classes[idx]))
        for j, i in enumerate(idx):
            boxes.append(box_from_cam(upsample(cams[j, 0], (int(sizes[i, 0]), int(sizes[i, 1])))))
        cams_out.append(cams[:, 0].numpy())
    seconds = time.perf_counter() - t0
    return len(rows) / seconds, np.concatenate(cams_out), np.array(boxes)


def method_cams(features: FeatureFile, boxer: CamBoxer, rows: np.ndarray, classes: np.ndarray, batch: int
                ) -> tuple[float, np.ndarray]:
    """CAMs + boxes/s of ``boxer``'s method: stored maps in batches -> :meth:`CamBoxer.boxes`; and the boxes."""
    sizes = features.sizes
    boxes = []
    t0 = time.perf_counter()
    for lo in range(0, len(rows), batch):
        idx = rows[lo: lo + batch]
        boxes.append(boxer.boxes(features.maps(idx), classes[idx], sizes[idx]))
    return len(rows) / (time.perf_counter() - t0), np.concatenate(boxes)


def gradient_cams(features: FeatureFile, boxer: CamBoxer, source: MapSource, rows: np.ndarray, classes: np.ndarray
                  ) -> float:
    """Images/s of a gradient method (dgl): decode, forward and backward per batch, then the same boxes."""
    t0 = time.perf_counter()
    cams = boxer.row_cams(source, rows, None, classes[rows])[:, 0]
    boxer.boxes_of(cams, features.sizes[rows], source.frames(rows))
    return len(rows) / (time.perf_counter() - t0)


def method_boxers(features: FeatureFile, classifier: LinearClassifier, names: Sequence[str]
                  ) -> tuple[dict[str, CamBoxer], dict[str, float], str]:
    """A CamBoxer per method; learned ones fitted and calibrated on the train split first (seconds per method).

    Without training images that carry boxes the learned methods are left out, and the reason is returned.
    """
    boxers = {name: CamBoxer(classifier.weight, CamOptions(method=name)) for name in names
              if name not in LEARNED_METHODS}
    fit_seconds: dict[str, float] = {}
    skipped = ""
    train = split_rows(features, "train") if "train" in set(features.splits.reshape(-1)) else np.array([], int)
    for name in (n for n in names if n in LEARNED_METHODS):
        t0 = time.perf_counter()
        try:
            if train.size == 0:
                raise FeatkitError("no train split")
            calibration = calibrate(features, classifier, train, CamOptions(method=name), device="cpu")
        except FeatkitError as exc:
            skipped = f"learned methods left out: {exc}"
            break
        fit_seconds[name] = time.perf_counter() - t0
        boxers[name] = calibration.boxer(classifier.weight)
        print(f"{name}: fitted and calibrated on {calibration.n_images} train images in {fit_seconds[name]:.1f} s "
              f"(threshold {calibration.options.threshold:.2f})", flush=True)
    return {n: boxers[n] for n in names if n in boxers}, fit_seconds, skipped


def torchcam_cams(features: FeatureFile, rows: np.ndarray, classes: np.ndarray, batch: int = 1
                  ) -> tuple[float, np.ndarray, np.ndarray]:
    """torch-cam CAM: decode, forward with hooks (``batch`` images per pass), CAM, same upsample and box."""
    from torchcam.methods import CAM

    attrs = features.attrs
    _, model, device = backbone_from_provenance(attrs, "cpu")
    size = int(attrs["input_size"])
    root = Path(str(attrs["dataset_root"]))
    paths = features.paths
    mean, std = tuple(attrs["mean"]), tuple(attrs["std"])
    cams_out, boxes = [], []
    with CAM(model, target_layer=model.body, fc_layer=model.head, input_shape=(3, size, size)) as extractor:
        t0 = time.perf_counter()
        for lo in range(0, len(rows), batch):
            idx = rows[lo: lo + batch]
            loaded = [load_rgb(root / paths[i], size) for i in idx]
            pixels = torch.stack([torch.from_numpy(p.copy()).permute(2, 0, 1) for p, _ in loaded])
            x = normalize_batch(pixels, mean, std).to(device)
            with torch.inference_mode():
                scores = model(x)
            cls = [int(c) for c in classes[idx]]
            cams = extractor(class_idx=cls if len(cls) > 1 else cls[0], scores=scores, normalized=False)[0]
            for j, (_, original) in enumerate(loaded):
                boxes.append(box_from_cam(upsample(cams[j], original)))
            cams_out.append(cams.detach().cpu().numpy())
        seconds = time.perf_counter() - t0
    return len(rows) / seconds, np.concatenate(cams_out), np.array(boxes)


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of maps (N, h, w)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def _fmt(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.perf_cam", description=__doc__.splitlines()[0])
    p.add_argument("--features", type=Path, default=None, help="features.h5 written with --maps (default: extract)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="CUB-200-2011 tree to extract from")
    p.add_argument("--synthetic", type=int, default=None, metavar="N", help="extract N generated JPEGs instead")
    p.add_argument("--images", type=int, default=128, help="images timed (default 128)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64, help="rows of maps per featkit batch")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--svm", type=Path, default=None,
                   help="svm.h5 whose weights the localization methods use (default: the backbone's head)")
    p.add_argument("--dgl-images", type=int, default=16, help="images dgl is timed on (0: skip dgl)")
    p.add_argument("--dgl-layer", default=DGL_LAYER, help=f"inner layer dgl is also timed on (default {DGL_LAYER})")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torchcam  # noqa: F401
    except ImportError:
        print("torch-cam is not installed: pip install torchcam (a dev extra)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="perf_cam_") as tmp:
        work = Path(tmp)
        features_path = args.features
        if features_path is None:
            if args.synthetic is not None:
                inputs = synthetic_images(work / "images", args.synthetic)
            elif args.root.is_dir():
                inputs = real_images(args.root)
            else:
                print(f"{args.root} is absent; pass --root, --features or --synthetic N", file=sys.stderr)
                return 2
            inputs = inputs.repeated(min(args.images, len(inputs.records)))
            features_path = work / "features.h5"
            splits = np.full((len(inputs.records), 1), "train", dtype=object)
            run_job(ExtractJob(inputs.root, inputs.records, inputs.classes, splits, "cub200", features_path,
                               ExtractOptions(model=args.model, weights=args.weights, image_size=args.image_size,
                                              maps=True, device="cpu", resize="warp")))
        with FeatureFile(features_path) as features:
            head = features.head()
            if features.geometry[0] != "warp":
                raise SystemExit(f"perf_cam: {features_path} was extracted with resize="
                                 f"{features.geometry[0]!r}; torch-cam's rows warp the image: use a warp file")
            if not features.has_maps or head is None:
                print(f"{features_path} needs features/maps and a head (extract with --maps)", file=sys.stderr)
                return 2
            n = min(args.images, len(features))
            rows = np.arange(n)
            classes = np.argmax(features.gap @ head.weight.T + head.bias, axis=1).astype(np.int64)
            runs: dict[str, list[float]] = {"featkit": [], "torchcam": [], "torchcam32": []}
            ratios: dict[str, list[float]] = {"torchcam": [], "torchcam32": []}
            classifier = load_svm(args.svm) if args.svm else LinearClassifier.from_head(head, features.attrs)
            method_classes = np.argmax(classifier.decision_function(features.gap), axis=1).astype(np.int64)
            boxers, fit_seconds, skipped = method_boxers(features, classifier, STORED_METHODS)
            method_runs: dict[str, list[float]] = {name: [] for name in boxers}
            method_ratios: dict[str, list[float]] = {name: [] for name in boxers}
            dgl_rows = rows[: max(0, min(args.dgl_images, n))]
            dgl_layers = ("last", args.dgl_layer) if dgl_rows.size else ()
            dgl_boxers = {layer: CamBoxer(classifier.weight, CamOptions(method="dgl", layer=layer))
                          for layer in dgl_layers}
            # A file extracted here records its own image root; --root only helps a given --features file.
            given_root = args.root if args.features is not None and args.root.is_dir() else None
            map_source = MapSource.of(features, given_root, device="cpu")
            load_seconds = 0.0
            if dgl_rows.size:
                gradient_cams(features, dgl_boxers["last"], map_source, dgl_rows[:2], method_classes)  # warm-up
                t0 = time.perf_counter()
                backbone_from_provenance(features.attrs, "cpu")
                load_seconds = time.perf_counter() - t0
            dgl_runs: dict[str, list[float]] = {layer: [] for layer in dgl_layers}
            dgl_ratios: dict[str, list[float]] = {layer: [] for layer in dgl_layers}
            load_before = os.getloadavg()
            for r in range(args.repeats):
                fk, cams_fk, boxes_fk = featkit_cams(features, rows, classes, args.batch_size)
                tc, cams_tc, boxes_tc = torchcam_cams(features, rows, classes, 1)
                tb, cams_tb, _ = torchcam_cams(features, rows, classes, 32)
                for key, value in (("featkit", fk), ("torchcam", tc), ("torchcam32", tb)):
                    runs[key].append(value)
                ratios["torchcam"].append(fk / tc)
                ratios["torchcam32"].append(fk / tb)
                print(f"round {r + 1}/{args.repeats}: featkit {fk:.1f}, torch-cam {tc:.1f}, "
                      f"torch-cam x32 {tb:.1f} CAMs+boxes/s", flush=True)
                speeds = {name: method_cams(features, boxer, rows, method_classes, args.batch_size)[0]
                          for name, boxer in boxers.items()}
                for name, value in speeds.items():
                    method_runs[name].append(value)
                    method_ratios[name].append(value / speeds["cam"])
                for layer, boxer in dgl_boxers.items():
                    value = gradient_cams(features, boxer, map_source, dgl_rows, method_classes)
                    dgl_runs[layer].append(value)
                    dgl_ratios[layer].append(speeds["cam"] / value)
                print("  methods: " + ", ".join(f"{k} {v:.1f}" for k, v in speeds.items())
                      + "".join(f", dgl@{k} {v[-1]:.1f}" for k, v in dgl_runs.items()), flush=True)
            corr = _corr(cams_fk, cams_tc)
            corr_batched = _corr(cams_tb, cams_tc)
            box_iou = iou(boxes_fk, boxes_tc)
            attrs = features.attrs
            weights_text = f"the SVM {args.svm.name}" if args.svm else "the backbone's ImageNet head"
            source = f"{n} images of {features_path.name if args.features else 'the extracted sample'}"
        load_text = " before the rounds, ".join(", ".join(f"{v:.2f}" for v in load)
                                                for load in (load_before, os.getloadavg())) + " after"
        median = {k: statistics.median(v) for k, v in runs.items()}
        speedup = {k: statistics.median(v) for k, v in ratios.items()}
        labels = {
            "featkit": f"featkit: stored maps (h5, batches of {args.batch_size}) + class_activation_maps + "
                       "upsample + box_from_cam",
            "torchcam": "torch-cam CAM: decode + forward pass with hooks per image + same upsample/box",
            "torchcam32": "torch-cam CAM, 32 images per forward pass",
        }
        md = [
            "# CAMs + boxes per second",
            "",
            f"{source}; {attrs['backbone']} at {attrs['input_size']} px, maps {tuple(attrs['map_size'])}; "
            "class = top-1 of the backbone's ImageNet head (its fc weights for both); CPU, "
            f"{torch.get_num_threads()} threads, torch-cam {__import__('torchcam').__version__}. Median of "
            f"{args.repeats} interleaved rounds; each ratio is taken within a round.",
            "",
            f"Generated by `python -m benchmarks.perf_cam {' '.join(argv if argv is not None else sys.argv[1:])}`.",
            "",
            "| pipeline | CAMs+boxes/s (median) | runs | featkit / this |",
            "|---|---:|---|---:|",
        ]
        csv_rows: list[tuple[Any, ...]] = []
        for key in ("featkit", "torchcam", "torchcam32"):
            ratio = speedup.get(key, 1.0)
            runs_text = ", ".join(_fmt(v) for v in runs[key])
            md.append(f"| {labels[key]} | {_fmt(median[key])} | {runs_text} | {ratio:.1f} |")
            csv_rows.append(("speed", labels[key], "cams_per_s", round(median[key], 3), "CAMs+boxes/s", runs_text))
            csv_rows.append(("speed", labels[key], "featkit_ratio", round(ratio, 3), "featkit / this", ""))
        md += [
            "",
            f"**featkit / torch-cam (per image) = {speedup['torchcam']:.1f}x** (target >= 10x); "
            f"against torch-cam batched 32: {speedup['torchcam32']:.1f}x.",
            "",
            "Agreement (featkit from float16 stored maps vs torch-cam from a fresh float32 forward pass):",
            "",
            f"- CAM correlation at map resolution, per image: min {corr.min():.6f}, median "
            f"{np.median(corr):.6f}, i.e. 1 - r <= {1 - corr.min():.1e} (target > 0.99)",
            f"- torch-cam batched vs per image: min correlation {corr_batched.min():.6f}",
            f"- box IoU featkit vs torch-cam: mean {box_iou.mean():.4f}, min {box_iou.min():.4f}",
            "",
            "## Localization methods",
            "",
            f"The same {n} images, boxes of the top-1 class of {weights_text} for every method, through "
            f"`CamBoxer(CamOptions(method=...)).boxes` on stored maps in batches of {args.batch_size} (boxes in "
            "original pixels), in the same interleaved rounds as above; `this / cam` is the median of the per-round "
            "ratios to `cam` (the machine is shared: ratios are what carry over). Learned methods were fitted and "
            "calibrated once on the train split before the rounds (their box threshold is the calibrated one, the "
            f"others box at 20 %); {skipped or 'their fit time is not in the rate'}. Load average during the run "
            f"(1/5/15 min): {load_text}.",
            "",
            "| method | CAMs+boxes/s (median) | runs | this / cam | fit + calibration on train (once) |",
            "|---|---:|---|---:|---:|",
        ]
        for name in method_runs:
            runs_text = ", ".join(_fmt(v) for v in method_runs[name])
            ratio = statistics.median(method_ratios[name])
            fit = f"{fit_seconds[name]:.1f} s" if name in fit_seconds else "-"
            md.append(f"| {name} | {_fmt(statistics.median(method_runs[name]))} | {runs_text} | {ratio:.2f} | {fit} |")
            csv_rows.append(("method", name, "cams_per_s", round(statistics.median(method_runs[name]), 3),
                             "CAMs+boxes/s", runs_text))
            csv_rows.append(("method", name, "ratio_to_cam", round(ratio, 4), "this / cam (same round)", ""))
            if name in fit_seconds:
                csv_rows.append(("method", name, "fit_calibration_s", round(fit_seconds[name], 2), "s",
                                 "fit + 2-fold calibration on the train split, once"))
        if dgl_runs:
            md += [
                "",
                f"Gradient method dgl (backbone forward + backward on the images, CPU, {torch.get_num_threads()} "
                f"threads) on the first {dgl_rows.size} images: decode, gradients, the same upsample and box. Each "
                f"call builds the backbone from the file's provenance ({load_seconds:.2f} s of it, measured apart).",
                "",
                "| method | layer | images/s (median) | runs | cam / this |",
                "|---|---|---:|---|---:|",
            ]
            for layer in dgl_runs:
                runs_text = ", ".join(_fmt(v) for v in dgl_runs[layer])
                ratio = statistics.median(dgl_ratios[layer])
                md.append(f"| dgl | {layer} | {_fmt(statistics.median(dgl_runs[layer]))} | {runs_text} | "
                          f"{ratio:.0f} |")
                csv_rows.append(("dgl", f"dgl layer={layer}", "images_per_s",
                                 round(statistics.median(dgl_runs[layer]), 3), "images/s", runs_text))
                csv_rows.append(("dgl", f"dgl layer={layer}", "cam_ratio", round(ratio, 2), "cam / this", ""))
            md.append("")
        csv_rows += [
            ("agreement", "CAM correlation featkit vs torch-cam", "min", round(float(corr.min()), 6), "r", ""),
            ("agreement", "CAM correlation featkit vs torch-cam", "median", round(float(np.median(corr)), 6), "r", ""),
            ("agreement", "box IoU featkit vs torch-cam", "mean", round(float(box_iou.mean()), 6), "IoU", ""),
            ("agreement", "box IoU featkit vs torch-cam", "min", round(float(box_iou.min()), 6), "IoU", ""),
        ]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "perf_cam.md").write_text("\n".join(md) + "\n")
        with (args.out / "perf_cam.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(csv_rows)
        print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
