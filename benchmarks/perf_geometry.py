"""Extraction throughput of every input geometry beside the warp path (img/s and input Mpx/s).

``short-side`` feeds the network more pixels than ``warp`` (a 4:3 photo at
224 px becomes 224 x 288 or 224 x 320), ``crop`` the same 224 x 224, and flip
TTA twice the images; Mpx/s (input pixels per second) separates what the
extra pixels cost from what the shape buckets cost. Each configuration runs
the same images through :func:`featkit.features.extractor.extract_rows`
(decode + forward + write, maps off unless ``--maps``), ``--repeats`` times, best run kept.

    python -m benchmarks.perf_geometry --root ../shared/data/CUB_200_2011 --dataset cub200 --limit 256
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.tables import write_table
from featkit.data import open_dataset
from featkit.data.geometry import frame, input_shape
from featkit.errors import FeatkitError
from featkit.features import ExtractOptions, FeatureFile
from featkit.features.extractor import SHAPE_WINDOW, ExtractJob, extract_rows, resolve_device
from featkit.models import get_backbone_spec

CONFIGS: tuple[tuple[str, str, int | None], ...] = (
    ("warp", "none", None), ("short-side", "none", 1), ("short-side", "none", None), ("crop", "none", None),
    ("short-side", "flip", None),
)
"""(resize, tta, shape_window): ``short-side`` with window 1 is the per-batch bucketing, None featkit's default."""


@dataclass(frozen=True)
class GeometryRun:
    resize: str
    tta: str
    window: int | None
    images: int
    seconds: float
    megapixels: float
    """Input pixels the network saw, in millions (both passes with flip TTA)."""

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def mpx_per_s(self) -> float:
        return self.megapixels / self.seconds


def input_megapixels(sizes: np.ndarray, resize: str, tta: str, input_size: int, stride: int) -> float:
    total = 0
    for w, h in sizes:
        x0, y0, x1, y1 = frame(float(w), float(h), resize)
        iw, ih = input_shape(x1 - x0, y1 - y0, resize, input_size, stride)
        total += iw * ih
    return total * (2 if tta == "flip" else 1) / 1e6


def timed_run(job: ExtractJob, resize: str, tta: str, window: int | None, output: Path) -> tuple[float, np.ndarray]:
    """Seconds of one extraction of ``job`` under this geometry, and the original sizes it recorded."""
    options = replace(job.options, resize=resize, tta=tta, shape_window=window, overwrite=True)
    started = time.perf_counter()
    extract_rows(replace(job, output=output, options=options))
    seconds = time.perf_counter() - started
    with FeatureFile(output) as features:
        sizes = features.sizes
    output.unlink()
    return seconds, sizes


def measure_all(job: ExtractJob, configs: Sequence[tuple[str, str, int | None]], repeats: int,
                scratch: Path) -> list[GeometryRun]:
    """Best of ``repeats`` runs per configuration, the repeats interleaved (every configuration once per
    round) so that a change of load on a shared machine hits all of them alike."""
    spec = get_backbone_spec(job.options.model)
    size = job.options.image_size or spec.input_size
    best = {c: float("inf") for c in configs}
    sizes = np.zeros((0, 2))
    for _ in range(repeats):
        for config in configs:
            seconds, sizes = timed_run(job, *config, scratch / "features.h5")
            best[config] = min(best[config], seconds)
    return [GeometryRun(resize, tta, window, len(job.records), best[(resize, tta, window)],
                        input_megapixels(sizes, resize, tta, size, spec.stride)) for resize, tta, window in configs]


def table_rows(runs: Sequence[GeometryRun]) -> list[list[str]]:
    warp = next(r for r in runs if r.resize == "warp" and r.tta == "none")
    rows = [["resize", "tta", "shape window", "images", "img/s", "vs warp", "input Mpx/s", "Mpx/s vs warp"]]
    for r in runs:
        window = "-" if r.resize != "short-side" else f"{r.window or SHAPE_WINDOW}" + ("" if r.window else " (default)")
        rows.append([r.resize, r.tta, window, str(r.images), f"{r.img_per_s:.1f}", f"{r.img_per_s / warp.img_per_s:.2f}x",
                     f"{r.mpx_per_s:.3f}", f"{r.mpx_per_s / warp.mpx_per_s:.2f}x"])
    return rows


def load_note() -> str:
    """``, load average L`` (1 minute, at the end of the runs) where the OS tells it: timings on a shared
    machine mean little without it."""
    try:
        return f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except (AttributeError, OSError):
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/CUB_200_2011"))
    parser.add_argument("--dataset", default="cub200")
    parser.add_argument("--limit", type=int, default=256, help="first N images of the dataset")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--maps", action="store_true", help="also write the maps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="perf_geometry")
    args = parser.parse_args(argv)
    try:
        dataset = open_dataset(args.dataset, args.root)
        records = dataset.records()[: args.limit]
        options = ExtractOptions(batch_size=args.batch_size, workers=args.workers, device=args.device,
                                 maps=args.maps)
        if args.model:
            options = replace(options, model=args.model)
        job = ExtractJob(args.root, records, dataset.classes(), np.full((len(records), 1), "", dtype=object),
                         dataset.manifest.name, Path("unused.h5"), options)
        with tempfile.TemporaryDirectory(prefix="featkit-perf-geometry-") as scratch:
            runs = measure_all(job, CONFIGS, args.repeats, Path(scratch))
    except FeatkitError as exc:
        print(f"perf_geometry: error: {exc}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    note = (f"{options.model}, {len(records)} images of {args.dataset} ({args.root.name}), batch {args.batch_size}, "
            f"{where}, maps {'on' if args.maps else 'off'}; best of {args.repeats} interleaved runs "
            f"(decode + forward + write){load_note()}. "
            "Mpx/s counts the input pixels the network saw: short-side feeds more pixels per image than warp.")
    print(write_table(table_rows(runs), args.out, args.name, note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
