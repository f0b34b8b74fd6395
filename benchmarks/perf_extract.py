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
(d) featkit's own ``extract_records`` writing a real features.h5 with default
    options (timed from its first progress callback: model loading is left
    out as it is for the others).

Ratios are taken within each round and the median over rounds is reported.
``--levers`` adds one table of what each setting buys (precision, memory
format, inference mode, threads, decode workers, background HDF5 writes);
``--memory`` adds peak RSS of an extraction child process at 1x and 10x the
images and the on-disk cost of ``features/maps`` per image.

Usage::

    python -m benchmarks.perf_extract                       # CUB sample, 256 images, 3 rounds
    python -m benchmarks.perf_extract --levers --memory     # the full results file
    python -m benchmarks.perf_extract --synthetic 8 --batch-size 4 --repeats 1 --out /tmp/r   # smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from featkit.data.base import ImageRecord
from featkit.data.images import ImageFolderView, collate, normalize_batch
from featkit.features import ExtractJob, ExtractOptions, run_job
from featkit.features import extractor as fx
from featkit.features.store import FeatureFile
from featkit.models import load_backbone
from featkit.models.efficientnet_lite import Conv2dSame

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "CUB_200_2011"
CSV_COLUMNS = ("section", "item", "metric", "value", "unit", "notes")


# ---------------------------------------------------------------- inputs


@dataclass
class Inputs:
    root: Path
    records: list[ImageRecord]
    classes: list[str]
    source: str

    @property
    def paths(self) -> list[Path]:
        return [self.root / r.path for r in self.records]

    def repeated(self, n: int) -> Inputs:
        reps = -(-n // len(self.records))
        return Inputs(self.root, (self.records * reps)[:n], self.classes, self.source)


def synthetic_images(folder: Path, n: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Inputs:
    """``n`` textured JPEGs of about CUB's size (quality 90), one class."""
    rng = np.random.default_rng(seed)
    w, h = size
    records = []
    for i in range(n):
        base = rng.integers(0, 255, size=(h // 16, w // 16, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w - 8 * (i % 4), h), Image.BILINEAR)
        path = folder / "images" / f"img_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90)
        records.append(ImageRecord(path.relative_to(folder).as_posix(), 0, "train"))
    return Inputs(folder, records, ["synthetic"], f"{n} synthetic {w}x{h} JPEGs")


def real_images(root: Path) -> Inputs:
    from featkit.data import open_dataset

    dataset = open_dataset("cub200", root)
    records = dataset.records()
    sizes = [Image.open(root / r.path).size for r in records[:50]]
    mean_w = int(np.mean([s[0] for s in sizes]))
    mean_h = int(np.mean([s[1] for s in sizes]))
    return Inputs(dataset.root, records, dataset.classes(),
                  f"CUB-200-2011 sample, {len(records)} JPEGs (about {mean_w}x{mean_h})")


# ---------------------------------------------------------------- the four pipelines


@dataclass
class Setup:
    model: str
    weights: str | None
    batch_size: int
    device: torch.device
    image_size: int | None
    precision: str = "float32"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str) -> Any:
    dtype = fx.PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def featkit_forward_batch(setup: Setup, precision: str | None = None) -> int:
    """Images per forward pass featkit uses on this device (the loader batch on a GPU)."""
    if setup.device.type != "cpu":
        return setup.batch_size
    spec, model, _ = load_backbone(setup.model, setup.weights)
    model = model.to(memory_format=torch.channels_last)
    return min(setup.batch_size, fx.cpu_forward_batch(model, setup.image_size or spec.input_size,
                                                      precision or setup.precision))


def compute_bound(inputs: Inputs, setup: Setup, n: int, *, channels_last: bool = True, inference: bool = True,
                  precision: str | None = None, threads: int | None = None, forward_batch: int | None = None
                  ) -> float:
    """(a) forward + GAP on decoded, normalized tensors already on the device: images/s.

    ``forward_batch`` cuts each batch into forward passes of that many images, as featkit does on the CPU.
    """
    spec, model, _ = load_backbone(setup.model, setup.weights)
    size = setup.image_size or spec.input_size
    view = ImageFolderView(inputs.root, [r.path for r in inputs.records[: setup.batch_size]], size)
    batch = collate([view[i] for i in range(len(view))])
    x = normalize_batch(batch.pixels.to(setup.device), spec.mean, spec.std)
    model = model.to(setup.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    sizes = [setup.batch_size] * (n // setup.batch_size) + ([n % setup.batch_size] if n % setup.batch_size else [])
    grad = torch.inference_mode() if inference else torch.no_grad()
    step = forward_batch or setup.batch_size

    def gap(batch: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([model.forward_features(part) for part in batch.split(step)])
        return maps.float().mean(dim=(2, 3)).cpu()

    with _threads(threads), grad, _autocast(setup.device, precision or setup.precision):
        gap(x[: sizes[0]])  # warm-up, as the others warm up
        _sync(setup.device)
        t0 = time.perf_counter()
        for b in sizes:
            gap(x[:b])
        _sync(setup.device)
        return n / (time.perf_counter() - t0)


def _tv_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Image.Image], torch.Tensor]:
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                               transforms.Normalize(mean, std)])


def naive_loop(inputs: Inputs, setup: Setup, n: int) -> tuple[float, np.ndarray]:
    """(b) PIL open + torchvision transforms + model, one batch after another, no workers."""
    spec, model, _ = load_backbone(setup.model, setup.weights)
    size = setup.image_size or spec.input_size
    tf = _tv_transform(size, spec.mean, spec.std)
    model = model.to(setup.device)
    paths = inputs.repeated(n).paths
    out = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, n, setup.batch_size):
            x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[lo: lo + setup.batch_size]])
            out.append(model.forward_features(x.to(setup.device)).mean(dim=(2, 3)).cpu().numpy())
    return n / (time.perf_counter() - t0), np.concatenate(out)


class _ImageList(torch.utils.data.Dataset):
    """torchvision ImageFolder's loading (``pil_loader``: open, convert RGB) over a path list."""

    def __init__(self, paths: list[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with open(self.paths[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img)


def feature_extractor(model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """torchvision's FX feature extractor returning the body's last node (the last conv map).

    Plain FX tracing fails on EfficientNet-Lite: its TF "same" padding computes
    the pad from the input's shape (control flow on traced values), so those
    convolutions are declared leaf modules, the documented way around it.
    """
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    body = model.body
    tracer_kwargs = {"leaf_modules": [Conv2dSame]}
    try:
        nodes = get_graph_node_names(body)[1]
        note = "create_feature_extractor"
        tracer_kwargs = {}
    except Exception:  # noqa: BLE001 -- any trace failure: retry with the padding convs as leaves
        nodes = get_graph_node_names(body, tracer_kwargs=tracer_kwargs)[1]
        note = "create_feature_extractor (Conv2dSame as FX leaf modules)"
    extractor = create_feature_extractor(body, return_nodes={nodes[-1]: "maps"}, tracer_kwargs=tracer_kwargs)
    return extractor, f"{note}, node {nodes[-1]}"


def competent(inputs: Inputs, setup: Setup, n: int, workers: int | None = None) -> tuple[float, np.ndarray, str]:
    """(c) create_feature_extractor behind a DataLoader with one worker per core."""
    spec, model, _ = load_backbone(setup.model, setup.weights)
    size = setup.image_size or spec.input_size
    extractor, note = feature_extractor(model)
    extractor = extractor.to(setup.device).eval()
    workers = (os.cpu_count() or 1) if workers is None else workers
    loader = DataLoader(_ImageList(inputs.repeated(n).paths, _tv_transform(size, spec.mean, spec.std)),
                        batch_size=setup.batch_size, num_workers=workers, pin_memory=setup.device.type == "cuda")
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in loader:
            maps = extractor(x.to(setup.device, non_blocking=True))["maps"]
            out.append(maps.mean(dim=(2, 3)).cpu().numpy())
    return n / (time.perf_counter() - t0), np.concatenate(out), f"{note}; DataLoader num_workers={workers}"


def featkit_run(inputs: Inputs, setup: Setup, n: int, out: Path, options: ExtractOptions | None = None,
                threads: int | None = None) -> tuple[float, np.ndarray]:
    """(d) featkit's extract_records writing ``out``; images/s from the first progress callback."""
    subset = inputs.repeated(n)
    options = options or ExtractOptions(model=setup.model, weights=setup.weights, batch_size=setup.batch_size,
                                        device=str(setup.device), image_size=setup.image_size,
                                        precision=setup.precision)
    options = replace(options, overwrite=True)
    started: list[float] = []

    def progress(done: int, total: int) -> None:
        if not started:
            started.append(time.perf_counter())

    splits = np.full((n, 1), "train", dtype=object)
    with _threads(threads):
        run_job(ExtractJob(subset.root, subset.records, subset.classes, splits, "cub200", Path(out), options, progress))
    seconds = time.perf_counter() - started[0]
    with FeatureFile(out) as f:
        gap = f.gap
    out.unlink()
    return n / seconds, gap


def torchrun_run(inputs: Inputs, setup: Setup, n: int, work: Path, processes: int) -> float:
    """featkit under ``torchrun --nproc_per_node processes``: images/s from rank 0's first progress callback
    to the end of its merge (process start-up and model loading left out, as for the others)."""
    records = work / "torchrun_records.json"
    records.write_text(json.dumps({"root": str(inputs.root), "paths": [r.path for r in inputs.repeated(n).records],
                                   "classes": inputs.classes}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           "-m", "benchmarks.perf_extract", "--_torchrun-child", str(records), "--model", setup.model,
           "--batch-size", str(setup.batch_size), "--device", str(setup.device), "--work", str(work)]
    if setup.weights:
        cmd += ["--weights", setup.weights]
    if setup.image_size:
        cmd += ["--image-size", str(setup.image_size)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1], env=env)
    line = next(x for x in done.stdout.splitlines() if x.startswith("{"))
    return float(json.loads(line)["img_s"])


def featkit_elsewhere(inputs: Inputs, setup: Setup, n: int, work: Path, source: Path) -> float:
    """(d) with the featkit package found under ``source`` (e.g. a checkout of an older commit), in a child."""
    records = work / "elsewhere_records.json"
    records.write_text(json.dumps({"root": str(inputs.root), "paths": [r.path for r in inputs.repeated(n).records],
                                   "classes": inputs.classes}))
    cmd = [sys.executable, "-m", "benchmarks.perf_extract", "--_records-child", str(records), "--model", setup.model,
           "--batch-size", str(setup.batch_size), "--device", str(setup.device), "--work", str(work)]
    if setup.weights:
        cmd += ["--weights", setup.weights]
    if setup.image_size:
        cmd += ["--image-size", str(setup.image_size)]
    # `python -m` puts the working directory first on sys.path: run from ``work`` so that ``featkit`` comes
    # from ``source`` and only ``benchmarks`` from this checkout
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(source), str(repo))))
    check = "import featkit, sys; print(featkit.__file__)"
    where = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=work,
                           env=env).stdout.strip()
    if not where.startswith(str(source)):
        raise RuntimeError(f"--compare-src {source}: featkit was imported from {where}")
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=work, env=env)
    line = next(x for x in done.stdout.splitlines() if x.startswith("{"))
    return float(json.loads(line)["img_s"])


def _torchrun_child(args: argparse.Namespace) -> None:
    spec = json.loads(Path(args._torchrun_child or args._records_child).read_text())
    records = [ImageRecord(p, 0, "train") for p in spec["paths"]]
    ranks = {"rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"])} \
        if args._torchrun_child else {}
    options = ExtractOptions(model=args.model, weights=args.weights, batch_size=args.batch_size,
                             image_size=args.image_size, device=args.device, overwrite=True, **ranks)
    started: list[float] = []

    def progress(done: int, total: int) -> None:
        if not started:
            started.append(time.perf_counter())

    splits = np.full((len(records), 1), "train", dtype=object)
    out = args.work / "torchrun.h5"
    run_job(ExtractJob(Path(spec["root"]), records, spec["classes"], splits, "cub200", Path(out), options, progress))
    if not ranks or options.rank == 0:  # type: ignore[attr-defined]
        print(json.dumps({"img_s": len(records) / (time.perf_counter() - started[0])}), flush=True)
        out.unlink()


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- speed section


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def speed(inputs: Inputs, setup: Setup, n: int, repeats: int, work: Path, compare: Path | None = None
          ) -> tuple[list[dict[str, Any]], str]:
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
        "d": f"(d) featkit extract_records -> features.h5 (defaults on this machine: {decode}, "
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
              "decodes at reduced scale (Pillow draft) before the same bilinear warp)")
    return rows, sanity


# ---------------------------------------------------------------- levers


def levers(inputs: Inputs, setup: Setup, n: int, repeats: int, work: Path) -> list[dict[str, Any]]:
    """What each setting buys, measured in interleaved rounds; ratios are against the row marked base."""
    cores = os.cpu_count() or 1
    base = ExtractOptions(model=setup.model, weights=setup.weights, batch_size=setup.batch_size,
                          device=str(setup.device), image_size=setup.image_size)
    step = featkit_forward_batch(setup)
    step16 = featkit_forward_batch(setup, "bfloat16")
    big = setup.batch_size

    def cb(**kw: Any) -> Callable[[], float]:
        return lambda: compute_bound(inputs, setup, n, **kw)

    trials: list[tuple[str, str, Callable[[], float]]] = [
        ("compute", f"fp32, channels_last, inference_mode, {step} images per pass (featkit) [base]",
         cb(forward_batch=step)),
        ("compute", f"fp32, channels_last, inference_mode, {big} images per pass", cb()),
        ("compute", f"fp32, NCHW, inference_mode, {step} per pass", cb(channels_last=False, forward_batch=step)),
        ("compute", f"fp32, NCHW, no_grad, {step} per pass", cb(channels_last=False, inference=False,
                                                                forward_batch=step)),
        ("compute", f"fp32, NCHW, no_grad, {big} per pass (what (b) runs)", cb(channels_last=False,
                                                                              inference=False)),
        ("compute", f"fp32, channels_last, {step} per pass, 1 torch thread", cb(forward_batch=step, threads=1)),
        ("compute", f"bfloat16 autocast, channels_last, {step16} per pass", cb(precision="bfloat16",
                                                                             forward_batch=step16)),
        ("compute", f"bfloat16 autocast, NCHW, {step16} per pass", cb(precision="bfloat16", channels_last=False,
                                                                     forward_batch=step16)),
    ]
    plan_workers, _ = fx.loader_plan(setup.device)
    featkit_trials: list[tuple[str, ExtractOptions, int | None]] = [
        (f"defaults: workers={plan_workers}, {cores} threads, {step} images per pass [base]", base, None),
        (f"forward passes of {big} images (the loader batch, as before)", replace(base, forward_batch=big), None),
        ("workers=0 decoding with 1 thread (as before) instead of a thread pool", replace(base, decode_threads=1),
         None),
        (f"workers=1, {cores} threads", replace(base, workers=1), None),
        (f"workers={min(4, cores)}, {cores} threads (the old default)", replace(base, workers=min(4, cores)), None),
        (f"workers=1, {max(1, cores - 1)} threads", replace(base, workers=1), max(1, cores - 1)),
        ("--maps, background writer thread (default)", replace(base, maps=True), None),
        ("--maps, writes in the main thread", replace(base, maps=True, async_writes=False), None),
        ("--precision bfloat16", replace(base, precision="bfloat16"), None),
    ]
    for label, options, threads in featkit_trials:
        def run(options: ExtractOptions = options, threads: int | None = threads) -> float:
            return featkit_run(inputs, setup, n, work / "lever.h5", options, threads)[0]
        trials.append(("featkit", label, run))
    if cores > 1:
        trials.append(("featkit", f"torchrun, {cores} processes x 1 thread (shards + merge)",
                       lambda: torchrun_run(inputs, setup, n, work, cores)))

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


# ---------------------------------------------------------------- memory and storage


def _proc_kb(pid: int | str, file: str, key: str) -> int:
    """A ``key: N kB`` line of /proc/<pid>/<file> (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/{file}") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


class _MemorySampler(threading.Thread):
    """Samples, every 100 ms, the RSS of this process plus its children (the decode workers; pages they
    share with the main process count twice) and the children's own peak RSS. Only /proc/<pid>/status is
    read: smaps_rollup (for PSS) walks the page tables under the mmap lock and slowed extraction 1.5x."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_total_rss_kb = 0
        self.peak_child_rss_kb = 0

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.wait(0.1):
            kids = _children(me)
            total = _proc_kb(me, "status", "VmRSS") + sum(_proc_kb(k, "status", "VmRSS") for k in kids)
            self.peak_total_rss_kb = max(self.peak_total_rss_kb, total)
            for kid in kids:
                self.peak_child_rss_kb = max(self.peak_child_rss_kb, _proc_kb(kid, "status", "VmHWM"))


def _child_extract(args: argparse.Namespace) -> None:
    """In a fresh process: extract ``--images`` rows (maps on) and print its memory peaks as JSON.

    The main process's peak is its own high-water mark (VmHWM: unlike ``ru_maxrss`` it is not inherited
    from the process that forked this one); workers and the total are sampled.
    """
    inputs = real_images(args.root) if args.synthetic is None else synthetic_images(args.work, args.synthetic)
    subset = inputs.repeated(args.images)
    options = ExtractOptions(model=args.model, weights=args.weights, batch_size=args.batch_size,
                             image_size=args.image_size, device=args.device, maps=True, overwrite=True,
                             workers=args.workers)
    splits = np.full((len(subset.records), 1), "train", dtype=object)
    out = args.work / f"memory_{args.images}.h5"
    sampler = _MemorySampler()
    sampler.start()
    series: list[float] = []
    every = len(inputs.records)

    def progress(done: int, total: int) -> None:  # RSS each time another 1x of rows is committed
        if done >= every * (len(series) + 1):
            series.append(_proc_kb(os.getpid(), "status", "VmRSS") / 1024)

    t0 = time.perf_counter()
    run_job(ExtractJob(subset.root, subset.records, subset.classes, splits, "cub200", Path(out), options, progress))
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    own = _proc_kb(os.getpid(), "status", "VmHWM") / 1024
    with FeatureFile(out) as f:
        per_image = f.h5["features/maps"].id.get_storage_size() / len(f)
    out.unlink()
    print(json.dumps({"main_mb": own, "worker_mb": sampler.peak_child_rss_kb / 1024,
                      "total_mb": sampler.peak_total_rss_kb / 1024, "seconds": seconds, "series": series,
                      "maps_bytes": per_image}))


def memory(inputs: Inputs, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    rows = []
    base_n = len(inputs.records)
    for workers, factor in ((None, 1), (None, 10), (2, 1), (2, 10)):
        n = base_n * factor
        cmd = [sys.executable, "-m", "benchmarks.perf_extract", "--_child", "--images", str(n),
               "--model", args.model, "--batch-size", str(args.batch_size), "--device", args.device,
               "--work", str(work), "--root", str(args.root)]
        if args.memory_image_size:
            cmd += ["--image-size", str(args.memory_image_size)]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        if args.weights:
            cmd += ["--weights", args.weights]
        if args.synthetic is not None:
            cmd += ["--synthetic", str(args.synthetic)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        plan = f"{workers} worker processes" if workers else "defaults (" + (
            f"{fx.loader_plan(torch.device(args.device))[0]} workers)" if args.device == "cpu" else "workers)")
        rows.append({"images": n, "factor": factor, "workers": plan, **result})
        print(f"memory {factor}x ({n} images, {plan}): main {result['main_mb']:.0f} MB, largest worker "
              f"{result['worker_mb']:.0f} MB", flush=True)
    return rows


def storage(inputs: Inputs, setup: Setup, n: int, work: Path) -> list[dict[str, Any]]:
    """Bytes per image of features/maps (float16, one chunk per image) under each filter."""
    import h5py

    options = ExtractOptions(model=setup.model, weights=setup.weights, batch_size=setup.batch_size,
                             device=str(setup.device), image_size=setup.image_size, maps=True, overwrite=True)
    subset = inputs.repeated(n)
    out = work / "storage.h5"
    splits = np.full((n, 1), "train", dtype=object)
    run_job(ExtractJob(subset.root, subset.records, subset.classes, splits, "cub200", Path(out), options))
    rows = []
    with h5py.File(out, "r") as f:
        stored = f["features/maps"]
        maps = stored[:]
        raw = maps[0].nbytes
        rows.append({"item": "gzip level 1 + shuffle (featkit)", "bytes": stored.id.get_storage_size() / n,
                     "raw": raw, "write_s": None, "read_s": None})
        for label, kwargs in (("lzf + shuffle", {"compression": "lzf", "shuffle": True}),
                              ("gzip level 1 + shuffle (featkit)", {"compression": "gzip", "compression_opts": 1,
                                                                    "shuffle": True}),
                              ("gzip level 4 + shuffle", {"compression": "gzip", "compression_opts": 4,
                                                          "shuffle": True}),
                              ("uncompressed", {})):
            path = work / "filter.h5"
            with h5py.File(path, "w") as g:
                t0 = time.perf_counter()
                ds = g.create_dataset("maps", data=maps, chunks=(1, *maps.shape[1:]), **kwargs)
                g.flush()
                write_s = time.perf_counter() - t0
                size = ds.id.get_storage_size() / n
            with h5py.File(path, "r") as g:
                t0 = time.perf_counter()
                g["maps"][:]
                read_s = time.perf_counter() - t0
            path.unlink()
            if label.endswith("(featkit)"):
                rows[0]["write_s"], rows[0]["read_s"] = write_s, read_s
                continue
            rows.append({"item": label, "bytes": size, "raw": raw, "write_s": write_s, "read_s": read_s})
    out.unlink()
    return rows


# ---------------------------------------------------------------- output


def _write(out: Path, md: list[str], csv_rows: list[tuple[Any, ...]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "perf_extract.md").write_text("\n".join(md) + "\n")
    with (out / "perf_extract.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_rows)


def _fmt(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


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
        _child_extract(args)
        return 0
    if args._torchrun_child or args._records_child:
        _torchrun_child(args)
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
        header = [
            "# Feature extraction throughput",
            "",
            f"{inputs.source}; {n} images per run, batch {args.batch_size}, {args.model} at {size} px, "
            f"device {device}, float32; {cores} CPU cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} intra-op threads). Median of {args.repeats} interleaved rounds; "
            "each ratio is taken within a round, then the median is reported.",
            "",
            f"Generated by `python -m benchmarks.perf_extract {' '.join(argv if argv is not None else sys.argv[1:])}`.",
            "",
        ]
        csv_rows: list[tuple[Any, ...]] = []
        md = list(header)
        if not args.memory_only:
            rows, sanity = speed(inputs, setup, n, args.repeats, work, args.compare_src)
            md += ["| pipeline | img/s (median) | runs | featkit / this | this / compute bound (a') |",
                   "|---|---:|---|---:|---:|"]
            a = rows[1]["img_s"]
            for row in rows:
                runs = ", ".join(_fmt(v) for v in row["runs"])
                md.append(f"| {row['item']} | {_fmt(row['img_s'])} | {runs} | {row['ratio']:.2f} | "
                          f"{row['img_s'] / a:.2f} |")
                csv_rows.append(("speed", row["item"], "img_per_s", round(row["img_s"], 3), "img/s", runs))
                csv_rows.append(("speed", row["item"], "featkit_ratio", round(row["ratio"], 4), "featkit / this", ""))
            ratio = {r["key"]: r["ratio"] for r in rows}
            md += ["", f"**featkit / compute bound = {ratio['a2']:.2f}** against (a'), the forward passes featkit "
                       f"runs (target >= 0.8); {ratio['a']:.2f} against (a), {args.batch_size} images per pass. "
                       f"**featkit / (b) = {ratio['b']:.2f}**, **featkit / (c) = {ratio['c']:.2f}** (targets > 1)."
                       + (f" Against featkit before this work (d0): {ratio['d0']:.2f}x." if "d0" in ratio else ""),
                   "", f"Sanity: {sanity}.", ""]
        if args.levers and not args.memory_only:
            lever_rows = levers(inputs, setup, args.lever_images or n, args.repeats, work)
            md += ["## Levers", "",
                   "Each row alone, interleaved rounds, median; the ratio is against the row marked (base) "
                   "of its group, within each round.", "",
                   "| group | setting | img/s (median) | runs | ratio to base |", "|---|---|---:|---|---:|"]
            for row in lever_rows:
                runs = ", ".join(_fmt(v) for v in row["runs"])
                md.append(f"| {row['section']} | {row['item']} | {_fmt(row['img_s'])} | {runs} | "
                          f"{row['ratio']:.2f} |")
                csv_rows.append((f"lever-{row['section']}", row["item"], "img_per_s", round(row["img_s"], 3),
                                 "img/s", runs))
                csv_rows.append((f"lever-{row['section']}", row["item"], "ratio_to_base", round(row["ratio"], 4),
                                 "x", ""))
            md.append("")
        if args.memory or args.memory_only:
            mem_rows = memory(inputs, args, work)
            md += ["## Memory", "",
                   f"Memory of `extract_records` (with `--maps`, input {args.memory_image_size or size} px) in a "
                   "fresh child process: the main process's peak RSS (its VmHWM; `ru_maxrss` would report the "
                   "forking parent's), the largest decode worker's peak RSS, and the peak of main + workers "
                   "(sampled every 100 ms; workers are forked, so pages they share with the main process count "
                   "twice there). 10x repeats every record ten times. About 540 MB of the main process is "
                   "`import torch` alone (CUDA build).", "",
                   "| images | decoding | main peak RSS (MB) | largest worker peak RSS (MB) | peak main + workers "
                   "RSS (MB) | seconds | main RSS / same setting at 1x |", "|---:|---|---:|---:|---:|---:|---:|"]
            first = {}
            for row in mem_rows:
                base_mb = first.setdefault(row["workers"], row["main_mb"])
                worker = f"{row['worker_mb']:.0f}" if row["worker_mb"] else "-"
                md.append(f"| {row['images']} ({row['factor']}x) | {row['workers']} | {row['main_mb']:.0f} | "
                          f"{worker} | {row['total_mb']:.0f} | {row['seconds']:.1f} | "
                          f"{row['main_mb'] / base_mb:.2f} |")
                item = f"{row['factor']}x ({row['images']} images), {row['workers']}"
                csv_rows.append(("memory", item, "main_peak_rss", round(row["main_mb"], 1), "MB", ""))
                csv_rows.append(("memory", item, "worker_peak_rss", round(row["worker_mb"], 1), "MB", ""))
                csv_rows.append(("memory", item, "peak_main_plus_workers_rss", round(row["total_mb"], 1), "MB", ""))
            for row in mem_rows:
                if row["factor"] > 1 and row.get("series"):
                    series = ", ".join(f"{v:.0f}" for v in row["series"])
                    md.append("")
                    md.append(f"Main process RSS (MB) after each {len(inputs.records)} rows of the "
                              f"{row['factor']}x run, {row['workers']}: {series}.")
                    csv_rows.append(("memory", f"{row['factor']}x, {row['workers']}", "rss_series", series, "MB",
                                     f"after every {len(inputs.records)} rows"))
            st_n = min(n, len(inputs.records))
            st_rows = storage(inputs, setup, st_n, work)
            md += ["", f"features/maps on disk per image ({spec.channels} x maps of {size} px input, float16, one "
                       f"chunk per image; {st_n} real images):", "",
                   "| filter | bytes / image | of raw float16 | write s | read s |", "|---|---:|---:|---:|---:|"]
            for row in st_rows:
                w = "" if row["write_s"] is None else f"{row['write_s']:.2f}"
                r = "" if row["read_s"] is None else f"{row['read_s']:.2f}"
                md.append(f"| {row['item']} | {row['bytes']:.0f} | {row['bytes'] / row['raw']:.2f} | {w} | {r} |")
                csv_rows.append(("storage", row["item"], "bytes_per_image", round(row["bytes"]), "B",
                                 f"raw {row['raw']} B"))
            md.append("")
        if args.memory_only and (args.out / "perf_extract.md").is_file():
            # keep the speed and lever tables of the last full run; replace its memory section
            kept = (args.out / "perf_extract.md").read_text().split("## Memory")[0].rstrip("\n").splitlines()
            command = f"python -m benchmarks.perf_extract {' '.join(argv if argv is not None else sys.argv[1:])}"
            md = kept + ["", "## Memory", "", f"(This section: `{command}`.)"] + md[len(header) + 1:]
            with (args.out / "perf_extract.csv").open() as handle:
                old_rows = [tuple(r) for r in list(csv.reader(handle))[1:] if r[0] not in ("memory", "storage")]
            csv_rows = old_rows + csv_rows
        _write(args.out, md, csv_rows)
        print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
