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

Usage::

    python -m benchmarks.perf_cam                        # 128 images of the CUB sample
    python -m benchmarks.perf_cam --features cub.h5      # an existing features file written with --maps
    python -m benchmarks.perf_cam --synthetic 8 --images 8 --repeats 1 --out /tmp/r   # smoke
"""

from __future__ import annotations

import argparse
import csv
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
from featkit.cam.boxes import box_from_cam, iou
from featkit.cam.maps import class_activation_maps, upsample
from featkit.data.images import load_rgb, normalize_batch
from featkit.features import ExtractJob, ExtractOptions, run_job
from featkit.features.extractor import backbone_from_provenance
from featkit.features.store import FeatureFile

CSV_COLUMNS = ("section", "item", "metric", "value", "unit", "notes")


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
                                              maps=True, device="cpu")))
        with FeatureFile(features_path) as features:
            head = features.head()
            if not features.has_maps or head is None:
                print(f"{features_path} needs features/maps and a head (extract with --maps)", file=sys.stderr)
                return 2
            n = min(args.images, len(features))
            rows = np.arange(n)
            classes = np.argmax(features.gap @ head.weight.T + head.bias, axis=1).astype(np.int64)
            runs: dict[str, list[float]] = {"featkit": [], "torchcam": [], "torchcam32": []}
            ratios: dict[str, list[float]] = {"torchcam": [], "torchcam32": []}
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
            corr = _corr(cams_fk, cams_tc)
            corr_batched = _corr(cams_tb, cams_tc)
            box_iou = iou(boxes_fk, boxes_tc)
            attrs = features.attrs
            source = f"{n} images of {features_path.name if args.features else 'the extracted sample'}"
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
        ]
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
