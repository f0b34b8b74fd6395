"""The pipelines the extraction benchmark compares, each timed on the same inputs.

(a) ``compute_bound``: forward + GAP on already decoded tensors; (b)
``naive_loop``: PIL + torchvision transforms, no workers; (c) ``competent``:
torchvision's ``create_feature_extractor`` behind a DataLoader; (d)
``featkit_run``: featkit's ``run_job(ExtractJob(...))`` writing a real
features.h5; plus featkit under torchrun, featkit from another source tree,
and ``lever_trials``: each setting on its own. Every function returns
images/s, timed from the first batch (model loading left out for all).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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

from benchmarks.perf_extract_inputs import Inputs
from featkit.data.base import ImageRecord
from featkit.data.geometry import CROP_FRACTION, DEFAULT_RESIZE, input_shape
from featkit.data.images import ImageFolderView, collate, normalize_batch
from featkit.features import ExtractJob, ExtractOptions, run_job
from featkit.features import extractor as fx
from featkit.features.store import FeatureFile
from featkit.models import load_backbone
from featkit.models.efficientnet_lite import Conv2dSame

#: One timed setting: (group, label, run returning images/s); the label of each group's base ends "[base]".
Trial = tuple[str, str, Callable[[], float]]


@dataclass
class Setup:
    """What every pipeline runs: the backbone, images per batch, device, input size and precision."""

    model: str
    weights: str | None
    batch_size: int
    device: torch.device
    image_size: int | None
    precision: str = "float32"
    resize: str = DEFAULT_RESIZE
    """Input geometry of every pipeline (featkit's default), so the features compare like with like."""


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
    view = ImageFolderView(inputs.root, [r.path for r in inputs.records[: setup.batch_size]], size,
                           resize=setup.resize, stride=spec.stride)
    groups = [normalize_batch(pixels.to(setup.device), spec.mean, spec.std)
              for _, pixels in collate([view[i] for i in range(len(view))]).groups]
    model = model.to(setup.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        groups = [x.contiguous(memory_format=torch.channels_last) for x in groups]
    rounds = -(-n // setup.batch_size)  # whole batches: a batch's shapes (short-side) are its groups
    grad = torch.inference_mode() if inference else torch.no_grad()
    step = forward_batch or setup.batch_size

    def gap() -> None:
        for x in groups:
            maps = torch.cat([model.forward_features(part) for part in x.split(step)])
            maps.float().mean(dim=(2, 3)).cpu()

    with torch_threads(threads), grad, _autocast(setup.device, precision or setup.precision):
        gap()  # warm-up, as the others warm up
        _sync(setup.device)
        t0 = time.perf_counter()
        for _ in range(rounds):
            gap()
        _sync(setup.device)
        return rounds * sum(len(x) for x in groups) / (time.perf_counter() - t0)


def _tv_transform(size: int, mean: Sequence[float], std: Sequence[float], resize: str = DEFAULT_RESIZE,
                  stride: int = 1) -> Callable[[Image.Image], torch.Tensor]:
    """torchvision's transforms for featkit's input geometry ``resize``, so the baselines see featkit's pixels:
    warp ``Resize((S, S))``; crop ``Resize(S / 0.875) + CenterCrop(S)``; short-side ``Resize((h, w))`` at the
    shape featkit computes for the image (aspect kept, long side on the stride grid, at most 2 S)."""
    from torchvision import transforms

    tail = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if resize == "warp":
        return transforms.Compose([transforms.Resize((size, size)), *tail])
    if resize == "crop":
        return transforms.Compose([transforms.Resize(round(size / CROP_FRACTION)), transforms.CenterCrop(size), *tail])
    after = transforms.Compose(tail)

    def short_side(img: Image.Image) -> torch.Tensor:
        width, height = input_shape(img.size[0], img.size[1], resize, size, stride)
        return after(transforms.functional.resize(img, [height, width]))

    return short_side


def _bucketed_gap(forward: Callable[[torch.Tensor], torch.Tensor], images: Sequence[torch.Tensor],
                  device: torch.device) -> np.ndarray:
    """GAP (n, K) of images that may differ in shape: one forward pass per shape, rows in input order."""
    buckets: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        buckets.setdefault(tuple(image.shape), []).append(i)
    out: np.ndarray | None = None
    for positions in buckets.values():
        maps = forward(torch.stack([images[i] for i in positions]).to(device, non_blocking=True))
        gap = maps.float().mean(dim=(2, 3)).cpu().numpy()
        if out is None:
            out = np.empty((len(images), gap.shape[1]), np.float32)
        out[positions] = gap
    assert out is not None  # at least one image
    return out


def naive_loop(inputs: Inputs, setup: Setup, n: int) -> tuple[float, np.ndarray]:
    """(b) PIL open + torchvision transforms + model, one batch after another, no workers."""
    spec, model, _ = load_backbone(setup.model, setup.weights)
    size = setup.image_size or spec.input_size
    tf = _tv_transform(size, spec.mean, spec.std, setup.resize, spec.stride)
    model = model.to(setup.device)
    paths = inputs.repeated(n).paths
    out = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, n, setup.batch_size):
            images = [tf(Image.open(p).convert("RGB")) for p in paths[lo: lo + setup.batch_size]]
            out.append(_bucketed_gap(model.forward_features, images, setup.device))
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
    transform = _tv_transform(size, spec.mean, spec.std, setup.resize, spec.stride)
    loader = DataLoader(_ImageList(inputs.repeated(n).paths, transform), batch_size=setup.batch_size,
                        num_workers=workers, pin_memory=setup.device.type == "cuda", collate_fn=list)
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for images in loader:
            out.append(_bucketed_gap(lambda x: extractor(x)["maps"], images, setup.device))
    return n / (time.perf_counter() - t0), np.concatenate(out), f"{note}; DataLoader num_workers={workers}"


def featkit_run(inputs: Inputs, setup: Setup, n: int, out: Path, options: ExtractOptions | None = None,
                threads: int | None = None) -> tuple[float, np.ndarray]:
    """(d) featkit's ``run_job(ExtractJob(...))`` writing ``out``; images/s from the first progress callback."""
    subset = inputs.repeated(n)
    options = options or ExtractOptions(model=setup.model, weights=setup.weights, batch_size=setup.batch_size,
                                        device=str(setup.device), image_size=setup.image_size,
                                        precision=setup.precision, resize=setup.resize)
    options = replace(options, overwrite=True)
    started: list[float] = []

    def progress(done: int, total: int) -> None:
        if not started:
            started.append(time.perf_counter())

    splits = np.full((n, 1), "train", dtype=object)
    with torch_threads(threads):
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


def records_child(args: argparse.Namespace) -> None:
    """In a child (torchrun rank or another featkit source): extract the listed records, print img/s as JSON."""
    spec = json.loads(Path(args._torchrun_child or args._records_child).read_text())
    records = [ImageRecord(p, 0, "train") for p in spec["paths"]]
    ranked = bool(args._torchrun_child)
    options = ExtractOptions(model=args.model, weights=args.weights, batch_size=args.batch_size,
                             image_size=args.image_size, device=args.device, overwrite=True,
                             rank=int(os.environ["RANK"]) if ranked else 0,
                             world_size=int(os.environ["WORLD_SIZE"]) if ranked else 1)
    started: list[float] = []

    def progress(done: int, total: int) -> None:
        if not started:
            started.append(time.perf_counter())

    splits = np.full((len(records), 1), "train", dtype=object)
    out = args.work / "torchrun.h5"
    run_job(ExtractJob(Path(spec["root"]), records, spec["classes"], splits, "cub200", Path(out), options, progress))
    if options.rank == 0:
        print(json.dumps({"img_s": len(records) / (time.perf_counter() - started[0])}), flush=True)
        out.unlink()


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch runs on ``n`` intra-op threads inside (unchanged for None), the previous count after."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def lever_trials(inputs: Inputs, setup: Setup, n: int, work: Path) -> list[Trial]:
    """What each setting buys: compute-bound variants and featkit options, each alone."""
    cores = os.cpu_count() or 1
    base = ExtractOptions(model=setup.model, weights=setup.weights, batch_size=setup.batch_size,
                          device=str(setup.device), image_size=setup.image_size)
    step = featkit_forward_batch(setup)
    step16 = featkit_forward_batch(setup, "bfloat16")
    big = setup.batch_size

    def cb(**kw: Any) -> Callable[[], float]:
        return lambda: compute_bound(inputs, setup, n, **kw)

    trials: list[Trial] = [
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
    return trials
