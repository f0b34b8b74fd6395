"""Images per second of feature extraction: featkit against the compute bound and two baselines.

On real JPEGs (the CUB sample, repeated to ``--images``; or ``--synthetic N``
generated ~500x375 JPEGs when the sample is absent) it times, in interleaved
rounds so that background load hits every method alike:

(a) compute bound: the backbone's forward pass + GAP alone, on already decoded
    and normalized tensors of the same batch size, with featkit's settings
    (channels_last, inference_mode, the same precision);
(b) a straightforward loop: PIL open, torchvision transforms
    (Resize((S, S)), ToTensor, Normalize), batch, model, no workers;
(c) what a competent user writes: torchvision's ``create_feature_extractor``
    on the same backbone (last conv map node) behind a standard DataLoader
    with ``num_workers = cores`` and ImageFolder-style PIL loading;
(d) featkit's own ``run_job(ExtractJob(...))`` writing a real features.h5
    with default options (timed from its first progress callback: model
    loading is left out as it is for the others).

Ratios are taken within each round and the median over rounds is reported.
``--levers`` adds one table of what each setting buys (precision, memory
format, inference mode, threads, decode workers, background HDF5 writes);
``--memory`` adds peak RSS of an extraction child process at 1x and 10x the
images and the on-disk cost of ``features/maps`` per image.

The code reads in three parts: the inputs (benchmarks/perf_extract_inputs.py),
the compared pipelines (benchmarks/perf_extract_pipelines.py, memory and
storage in benchmarks/perf_extract_memory.py), and here the rounds, the
ratios and the report, written through benchmarks/tables.py.

Usage::

    python -m benchmarks.perf_extract                       # CUB sample, 256 images, 3 rounds
    python -m benchmarks.perf_extract --levers --memory     # the full results file
    python -m benchmarks.perf_extract --synthetic 8 --batch-size 4 --repeats 1 --out /tmp/r   # smoke
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.perf_extract_inputs import DEFAULT_ROOT, Inputs, real_images, synthetic_images
from benchmarks.perf_extract_memory import child_extract, memory, storage
from benchmarks.perf_extract_pipelines import (
    Setup,
    competent,
    compute_bound,
    featkit_elsewhere,
    featkit_forward_batch,
    featkit_run,
    lever_trials,
    naive_loop,
    records_child,
)
from benchmarks.tables import to_markdown, write_files
from featkit.features import extractor as fx
from featkit.models import load_backbone

CSV_COLUMNS = ("section", "item", "metric", "value", "unit", "notes")


# ---------------------------------------------------------------- rounds


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def speed(inputs: Inputs, setup: Setup, n: int, repeats: int, work: Path, compare: Path | None = None
          ) -> tuple[list[dict[str, Any]], str]:
    """Pipelines (a)-(d) (and (d0) with ``compare``) in interleaved rounds: rows with medians and ratios, sanity text."""
    keys = ("a", "a2", "b", "c", "d") + (("d0",) if compare else ())
    runs: dict[str, list[float]] = {k: [] for k in keys}
    ratios: dict[str, list[float]] = {k: [] for k in keys if k != "d"}
    notes = ""
    step = featkit_forward_batch(setup)
    for r in range(repeats):
        # the compute bounds next to (d): the headline ratio compares neighbours in time
        a = compute_bound(inputs, setup, n)
        a2 = compute_bound(inputs, setup, n, forward_batch=step)
        d, gap_d = featkit_run(inputs, setup, n, work / "speed.h5")
        b, gap_b = naive_loop(inputs, setup, n)
        c, gap_c, notes = competent(inputs, setup, n)
        values = [a, a2, b, c, d]
        if compare:
            values.append(featkit_elsewhere(inputs, setup, n, work, compare))
        for key, value in zip(keys, values):
            runs[key].append(value)
            if key != "d":
                ratios[key].append(d / value)
        print(f"round {r + 1}/{repeats}: (a) {a:.2f}  (a') {a2:.2f}  (b) {b:.2f}  (c) {c:.2f}  (d) {d:.2f} img/s",
              flush=True)
    workers, threads = fx.loader_plan(setup.device)
    decode = f"{workers} decode workers" if workers else "decode in the main process between batches"
    labels = {
        "a": f"(a) compute bound: forward + GAP on decoded tensors, {setup.batch_size} per forward pass "
             "(channels_last, inference_mode)",
        "a2": f"(a') compute bound with featkit's forward passes: the same batches cut into {step} images per pass",
        "b": "(b) straightforward loop: PIL + torchvision transforms, no workers",
        "c": f"(c) torchvision {notes}",
        "d": f"(d) featkit run_job(ExtractJob) -> features.h5 (defaults on this machine: {decode}, "
             f"{threads or torch.get_num_threads()} torch threads)",
        "d0": "(d0) featkit before this work ("
              + (f"{(compare / 'COMMIT').read_text().strip()}" if compare and (compare / "COMMIT").is_file()
                 else f"package at {compare}") + "), same call",
    }
    rows = []
    for key in keys:
        rows.append({
            "key": key, "item": labels[key], "img_s": _median(runs[key]), "runs": runs[key],
            "ratio": _median(ratios[key]) if key in ratios else 1.0,
        })
    size = setup.image_size or load_backbone(setup.model, setup.weights)[0].input_size
    drafted = sum(1 for p in inputs.repeated(n).paths if min(Image.open(p).size) >= 2 * size)
    cos = np.sum(gap_b * gap_d, 1) / (np.linalg.norm(gap_b, axis=1) * np.linalg.norm(gap_d, axis=1))
    sanity = (f"(b) and (c) agree to {float(np.abs(gap_b - gap_c).max()):.1g} (max |gap difference|); featkit's "
              f"features against (b): cosine similarity min {cos.min():.4f}, median {np.median(cos):.5f} "
              f"({drafted} of the {n} JPEGs are at least {2 * size} px on their short side, which featkit "
              f"decodes at reduced scale (Pillow draft) before the same bilinear resize; every pipeline uses the "
              f"{setup.resize!r} geometry)")
    return rows, sanity


def levers(inputs: Inputs, setup: Setup, n: int, repeats: int, work: Path) -> list[dict[str, Any]]:
    """What each setting buys, measured in interleaved rounds; ratios are against the row marked base."""
    trials = lever_trials(inputs, setup, n, work)

    results: dict[str, list[float]] = {label: [] for _, label, _ in trials}
    for r in range(repeats):
        for _, label, fn in trials:
            results[label].append(fn())
        print(f"levers round {r + 1}/{repeats} done", flush=True)
    rows = []
    for section in ("compute", "featkit"):
        labels = [label for s, label, _ in trials if s == section]
        base_label = next(label for label in labels if label.endswith("[base]"))
        for label in labels:
            per_round = [x / y for x, y in zip(results[label], results[base_label])]
            rows.append({"section": section, "item": label.replace(" [base]", " (base)"),
                         "img_s": _median(results[label]), "runs": results[label], "ratio": _median(per_round)})
    return rows


# ---------------------------------------------------------------- report


def _fmt(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _table(rows: list[list[Any]], left_columns: set[int]) -> str:
    """One markdown table through the shared writer, without its final newline (lines are joined here)."""
    return to_markdown(rows, left_columns=left_columns).rstrip("\n")


def speed_section(rows: list[dict[str, Any]], sanity: str, batch_size: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Markdown lines and CSV rows of the speed table, the headline ratios and the sanity line."""
    a = rows[1]["img_s"]
    table: list[list[Any]] = [["pipeline", "img/s (median)", "runs", "featkit / this", "this / compute bound (a')"]]
    csv_rows: list[tuple[Any, ...]] = []
    for row in rows:
        runs = ", ".join(_fmt(v) for v in row["runs"])
        table.append([row["item"], _fmt(row["img_s"]), runs, f"{row['ratio']:.2f}", f"{row['img_s'] / a:.2f}"])
        csv_rows.append(("speed", row["item"], "img_per_s", round(row["img_s"], 3), "img/s", runs))
        csv_rows.append(("speed", row["item"], "featkit_ratio", round(row["ratio"], 4), "featkit / this", ""))
    ratio = {r["key"]: r["ratio"] for r in rows}
    md = [_table(table, {0, 2}),
          "", f"**featkit / compute bound = {ratio['a2']:.2f}** against (a'), the forward passes featkit "
              f"runs (target >= 0.8); {ratio['a']:.2f} against (a), {batch_size} images per pass. "
              f"**featkit / (b) = {ratio['b']:.2f}**, **featkit / (c) = {ratio['c']:.2f}** (targets > 1)."
              + (f" Against featkit before this work (d0): {ratio['d0']:.2f}x." if "d0" in ratio else ""),
          "", f"Sanity: {sanity}.", ""]
    return md, csv_rows


def levers_section(rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Markdown lines and CSV rows of the levers table."""
    table: list[list[Any]] = [["group", "setting", "img/s (median)", "runs", "ratio to base"]]
    csv_rows: list[tuple[Any, ...]] = []
    for row in rows:
        runs = ", ".join(_fmt(v) for v in row["runs"])
        table.append([row["section"], row["item"], _fmt(row["img_s"]), runs, f"{row['ratio']:.2f}"])
        csv_rows.append((f"lever-{row['section']}", row["item"], "img_per_s", round(row["img_s"], 3), "img/s", runs))
        csv_rows.append((f"lever-{row['section']}", row["item"], "ratio_to_base", round(row["ratio"], 4), "x", ""))
    md = ["## Levers", "",
          "Each row alone, interleaved rounds, median; the ratio is against the row marked (base) "
          "of its group, within each round.", "", _table(table, {0, 1, 3}), ""]
    return md, csv_rows


def memory_section(mem_rows: list[dict[str, Any]], st_rows: list[dict[str, Any]], *, memory_size: int,
                   storage_size: int, channels: int, records: int, st_n: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Markdown lines and CSV rows of the memory table, the RSS series and the storage table."""
    md = ["## Memory", "",
          f"Memory of `run_job` (with `--maps`, input {memory_size} px) in a "
          "fresh child process: the main process's peak RSS (its VmHWM; `ru_maxrss` would report the "
          "forking parent's), the largest decode worker's peak RSS, and the peak of main + workers "
          "(sampled every 100 ms; workers are forked, so pages they share with the main process count "
          "twice there). 10x repeats every record ten times. About 540 MB of the main process is "
          "`import torch` alone (CUDA build).", ""]
    table: list[list[Any]] = [["images", "decoding", "main peak RSS (MB)", "largest worker peak RSS (MB)",
                               "peak main + workers RSS (MB)", "seconds", "main RSS / same setting at 1x"]]
    csv_rows: list[tuple[Any, ...]] = []
    first: dict[str, float] = {}
    for row in mem_rows:
        base_mb = first.setdefault(row["workers"], row["main_mb"])
        worker = f"{row['worker_mb']:.0f}" if row["worker_mb"] else "-"
        table.append([f"{row['images']} ({row['factor']}x)", row["workers"], f"{row['main_mb']:.0f}", worker,
                      f"{row['total_mb']:.0f}", f"{row['seconds']:.1f}", f"{row['main_mb'] / base_mb:.2f}"])
        item = f"{row['factor']}x ({row['images']} images), {row['workers']}"
        csv_rows.append(("memory", item, "main_peak_rss", round(row["main_mb"], 1), "MB", ""))
        csv_rows.append(("memory", item, "worker_peak_rss", round(row["worker_mb"], 1), "MB", ""))
        csv_rows.append(("memory", item, "peak_main_plus_workers_rss", round(row["total_mb"], 1), "MB", ""))
    md.append(_table(table, {1}))
    for row in mem_rows:
        if row["factor"] > 1 and row.get("series"):
            series = ", ".join(f"{v:.0f}" for v in row["series"])
            md += ["", f"Main process RSS (MB) after each {records} rows of the {row['factor']}x run, "
                       f"{row['workers']}: {series}."]
            csv_rows.append(("memory", f"{row['factor']}x, {row['workers']}", "rss_series", series, "MB",
                             f"after every {records} rows"))
    table = [["filter", "bytes / image", "of raw float16", "write s", "read s"]]
    for row in st_rows:
        w = "" if row["write_s"] is None else f"{row['write_s']:.2f}"
        r = "" if row["read_s"] is None else f"{row['read_s']:.2f}"
        table.append([row["item"], f"{row['bytes']:.0f}", f"{row['bytes'] / row['raw']:.2f}", w, r])
        csv_rows.append(("storage", row["item"], "bytes_per_image", round(row["bytes"]), "B", f"raw {row['raw']} B"))
    md += ["", f"features/maps on disk per image ({channels} x maps of {storage_size} px input, float16, one "
               f"chunk per image; {st_n} real images):", "", _table(table, {0}), ""]
    return md, csv_rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.perf_extract", description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="CUB-200-2011 tree (default: the shared sample)")
    p.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="generate N ~500x375 JPEGs in a temp folder instead (CI smoke, no sample needed)")
    p.add_argument("--images", type=int, default=None, help="images per timed run (default 256)")
    p.add_argument("--repeat-sample", type=int, default=1, metavar="K",
                   help="repeat the image list K times (then cut to --images)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto (default cpu)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--levers", action="store_true", help="also time each setting on its own")
    p.add_argument("--lever-images", type=int, default=None, help="images per lever run (default: --images)")
    p.add_argument("--memory", action="store_true",
                   help="also peak RSS at 1x and 10x the images, and features/maps bytes per image")
    p.add_argument("--memory-only", action="store_true",
                   help="only the memory section, replacing it in an existing results file")
    p.add_argument("--memory-image-size", type=int, default=None,
                   help="input size of the 1x/10x memory runs (default: the model's)")
    p.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_torchrun-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_records-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--compare-src", type=Path, default=None,
                   help="also time (d) with the featkit package under this folder (e.g. an older checkout)")
    p.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child:
        child_extract(args)
        return 0
    if args._torchrun_child or args._records_child:
        records_child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="perf_extract_") as tmp:
        work = Path(tmp)
        args.work = work
        if args.synthetic is not None:
            inputs = synthetic_images(work / "images", args.synthetic)
        else:
            if not args.root.is_dir():
                print(f"{args.root} is absent; pass --root or --synthetic N", file=sys.stderr)
                return 2
            inputs = real_images(args.root)
        inputs = Inputs(inputs.root, inputs.records * args.repeat_sample, inputs.classes, inputs.source)
        n = args.images or 256
        device = fx.resolve_device(args.device)
        setup = Setup(args.model, args.weights, args.batch_size, device, args.image_size)
        spec = load_backbone(args.model, args.weights)[0]
        size = args.image_size or spec.input_size
        cores = os.cpu_count() or 1
        command = f"python -m benchmarks.perf_extract {' '.join(argv if argv is not None else sys.argv[1:])}"
        header = [
            "# Feature extraction throughput",
            "",
            f"{inputs.source}; {n} images per run, batch {args.batch_size}, {args.model} at {size} px, "
            f"device {device}, float32; {cores} CPU cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} intra-op threads). Median of {args.repeats} interleaved rounds; "
            "each ratio is taken within a round, then the median is reported.",
            "",
            f"Generated by `{command}`.",
            "",
        ]
        csv_rows: list[tuple[Any, ...]] = []
        md = list(header)
        if not args.memory_only:
            rows, sanity = speed(inputs, setup, n, args.repeats, work, args.compare_src)
            lines, more = speed_section(rows, sanity, args.batch_size)
            md, csv_rows = md + lines, csv_rows + more
        if args.levers and not args.memory_only:
            lines, more = levers_section(levers(inputs, setup, args.lever_images or n, args.repeats, work))
            md, csv_rows = md + lines, csv_rows + more
        if args.memory or args.memory_only:
            st_n = min(n, len(inputs.records))
            lines, more = memory_section(memory(inputs, args, work), storage(inputs, setup, st_n, work),
                                         memory_size=args.memory_image_size or size, storage_size=size,
                                         channels=spec.channels, records=len(inputs.records), st_n=st_n)
            md, csv_rows = md + lines, csv_rows + more
        if args.memory_only and (args.out / "perf_extract.md").is_file():
            # keep the speed and lever tables of the last full run; replace its memory section
            kept = (args.out / "perf_extract.md").read_text().split("## Memory")[0].rstrip("\n").splitlines()
            md = kept + ["", "## Memory", "", f"(This section: `{command}`.)"] + md[len(header) + 1:]
            with (args.out / "perf_extract.csv").open() as handle:
                old_rows = [tuple(r) for r in list(csv.reader(handle))[1:] if r[0] not in ("memory", "storage")]
            csv_rows = old_rows + csv_rows
        write_files(args.out, "perf_extract", "\n".join(md) + "\n", [CSV_COLUMNS, *csv_rows])
        print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
