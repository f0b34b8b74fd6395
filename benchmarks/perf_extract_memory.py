"""Memory and storage of an extraction: peak RSS at 1x and 10x the images, features/maps bytes per image.

Each memory run is a fresh child process (``python -m benchmarks.perf_extract
--_child``) so that its peaks are its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.perf_extract_inputs import Inputs, real_images, synthetic_images
from benchmarks.perf_extract_pipelines import Setup
from featkit.features import ExtractJob, ExtractOptions, run_job
from featkit.features import extractor as fx
from featkit.features.store import FeatureFile


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


def child_extract(args: argparse.Namespace) -> None:
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
    """Peaks of four child extractions: default decoding and 2 workers, at 1x and 10x the records."""
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
