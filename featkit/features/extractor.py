"""One process running a backbone over a list of images into one features.h5 (or one shard of it).

An :class:`ExtractJob` says what to extract (images, classes, splits, output,
optional crop boxes) and :class:`ExtractOptions` how (backbone, input size,
batching, device, tuning knobs). Decoding runs in DataLoader worker processes
or a thread pool while the network runs and a background thread writes the
previous batch; rows are committed a batch at a time (under ``short-side`` a
window of batches regrouped by input shape), so Ctrl-C or kill -9 loses at
most the batch in flight and a re-run resumes. Several processes
sharding one job build on this module (:mod:`featkit.features.distributed`),
and :mod:`featkit.features.pipeline` chooses between the two.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from featkit.data.base import ImageRecord
from featkit.data.geometry import DEFAULT_RESIZE, canvas_input, check_geometry
from featkit.data.images import Batch, ImageFolderView, collate, concat_batches, normalize_batch
from featkit.errors import FeatkitError
from featkit.features.schema import STATUS_FAILED, STATUS_OK, Provenance
from featkit.features.store import FeatureWriter, Head
from featkit.models import DEFAULT_BACKBONE, load_backbone
from featkit.models.registry import Backbone, BackboneSpec

log = logging.getLogger(__name__)

ON_ERROR = ("fail", "skip")
MAX_BATCH = 4096
"""Largest batch_size: a batch of 4096 inputs at 448 px is already 2.5 GB of pixels."""
SHAPE_WINDOW = 128
"""Default ``shape_window``: at 224 px a batch of 32 photos holds 5 to 11 input shapes under ``short-side``,
so per-batch buckets run as many small, ragged forward passes; 128 images fill most passes
(benchmarks/results/perf_geometry.md)."""
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ExtractOptions:
    """Everything ``featkit extract`` can be told; the defaults work offline on a CPU."""

    model: str = DEFAULT_BACKBONE
    weights: str | None = None
    image_size: int | None = None
    batch_size: int = 32
    workers: int | None = None
    device: str = "auto"
    maps: bool = False
    on_error: str = "fail"
    overwrite: bool = False
    precision: str = "float32"
    resize: str = DEFAULT_RESIZE
    """Input geometry (:mod:`featkit.data.geometry`): ``warp``, ``short-side`` or ``crop``."""
    tta: str = "none"
    """``flip``: features (and maps, flipped back) are the mean of the image's and its mirror's."""
    layer: str | None = None
    """A module of the backbone body (``named_modules`` name) whose output is the feature map instead of the
    last conv layer: GAP features of an inner stage (recorded as ``feature_layer``; no head is stored)."""
    rank: int = 0
    world_size: int = 1
    """``world_size > 1``: this process extracts the ``rank``-th contiguous block of rows into its own
    shard file (:func:`featkit.features.distributed.shard_path`); under torchrun rank 0 then merges the shards."""
    keep_shards: bool = False
    """Keep the shard files after a successful merge (they are deleted by default)."""
    exif_transpose: bool = False
    """Turn each image upright by its EXIF orientation tag before anything else (sizes, maps and boxes on
    the upright grid); False reads pixels as stored, the grid dataset annotations refer to."""
    moved_root: bool = False
    """Resume a file extracted from another dataset root (the dataset moved): allowed only when the
    committed rows' images under the new root match their recorded fingerprints (size + head hash)."""
    # Tuning knobs: the defaults are the measured best (benchmarks/results/perf_extract.md); the
    # benchmark sets them to measure what each one buys.
    async_writes: bool = True
    """Write each finished batch in a background thread while the next one runs (one batch in flight at
    most, committed in order, so ``rows_done`` still moves only after its rows are flushed)."""
    forward_batch: int | None = None
    """Images per forward pass on the CPU; None: as many as keep the largest activation within 60 % of the
    last-level cache (:func:`cpu_forward_batch`). ``batch_size`` stays the unit of reading and writing."""
    decode_threads: int | None = None
    """Threads decoding a batch with ``workers=0``; None: as many as torch's intra-op threads."""
    shape_window: int | None = None
    """``short-side``: images regrouped by input shape before the forward passes (whole batches, committed
    together); None: :data:`SHAPE_WINDOW`. 1 runs each batch's shape buckets on their own."""

    def validate(self) -> None:
        """Refuse impossible values before any work (names are the Python keywords; the CLI maps them)."""
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise FeatkitError(f"batch_size must lie in 1..{MAX_BATCH}, got {self.batch_size}")
        if self.image_size is not None and not 32 <= self.image_size <= 2048:
            raise FeatkitError(f"image_size must be between 32 and 2048 pixels, got {self.image_size}")
        if self.workers is not None and self.workers < 0:
            raise FeatkitError(f"workers must be 0 or more, got {self.workers}")
        cores = os.cpu_count() or 1
        if self.workers is not None and self.workers > cores:
            raise FeatkitError(f"workers must be at most {cores} (this machine's CPU cores; each worker holds its "
                               f"own copy of the decoder), got {self.workers}")
        if self.on_error not in ON_ERROR:
            raise FeatkitError(f"on_error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}")
        check_geometry(self.resize, self.tta)
        if self.precision not in PRECISIONS:
            raise FeatkitError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise FeatkitError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.world_size < 1:
            raise FeatkitError(f"world_size must be at least 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise FeatkitError(f"rank must be in 0..{self.world_size - 1} for world_size {self.world_size}, "
                               f"got {self.rank}")
        for name in ("forward_batch", "decode_threads", "shape_window"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FeatkitError(f"{name} must be at least 1 (or None for automatic), got {value}")


Progress = Callable[[int, int], None]
"""``progress(done, total)``: called after every committed batch (and once at the start)."""


@dataclass(frozen=True)
class ExtractJob:
    """What one extraction writes: the images (relative to ``root``), their labels, splits and boxes."""

    root: Path
    records: Sequence[ImageRecord]
    classes: Sequence[str]
    splits: np.ndarray
    """(N, F) split names, one column per fold."""
    dataset: str
    """Manifest name, recorded in the file."""
    output: Path
    options: ExtractOptions = ExtractOptions()
    progress: Progress | None = field(default=None, compare=False)
    crops: np.ndarray | None = None
    """(N, 4) boxes in original pixels: every row is then the features of that box (paper Table 4),
    stored as ``images/crop_box``."""
    crop_source: str = ""
    """What the crop boxes are (recorded as the ``crop`` attribute)."""
    extra: dict[str, object] = field(default_factory=dict)
    """Additive provenance attributes (a shard's place in the whole job)."""

    def rows(self, start: int, stop: int, output: Path, extra: Mapping[str, object]) -> ExtractJob:
        """The same job restricted to rows ``start:stop`` written to ``output`` (one shard)."""
        return ExtractJob(
            self.root, self.records[start:stop], self.classes, np.asarray(self.splits, dtype=object)[start:stop],
            self.dataset, output, self.options, self.progress,
            None if self.crops is None else self.crops[start:stop], self.crop_source, {**self.extra, **extra},
        )


@dataclass(frozen=True)
class ExtractResult:
    path: Path
    n_images: int
    rows_written: int  # by this run (0 when the file was already complete)
    resumed_from: int
    failed: list[str]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FeatkitError("device='cuda' was asked for but no CUDA GPU is visible; use device='cpu' or device='auto'")
    return device


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def loader_plan(device: torch.device, workers: int | None = None, processes: int = 1) -> tuple[int, int | None]:
    """(decode worker processes, intra-op threads for the run or None to keep torch's) when ``--workers``
    is ``workers`` (None: not given) and ``processes`` extractions share this machine.

    With the network on a GPU the CPU only decodes: ``min(4, cores)`` workers.
    With the network on the CPU it wants every core, and decode workers that
    preempt its OpenMP threads cost more than they save (the team waits for its
    slowest thread): workers take only the cores torch's threads leave free;
    with none free, small machines (<= 3 cores per process) decode in the main
    process between batches, larger ones give one core to one decode worker.
    Measured in benchmarks/results/perf_extract.md (2 cores: inline decode
    1.2x the old default of 2 workers).
    """
    cores = _cores()
    if workers is not None:
        return workers, None
    if device.type != "cpu":
        return min(4, cores), None
    per_process = max(1, cores // max(1, processes))
    spare = per_process - torch.get_num_threads()
    if spare > 0:
        return min(4, spare), None
    if per_process <= 3:
        return 0, None
    return 1, per_process - 1


def default_workers(device: torch.device | None = None) -> int:
    """Decode workers used when ``--workers`` is not given (see :func:`loader_plan`)."""
    return loader_plan(device or torch.device("cuda"))[0]


_FALLBACK_CACHE = 16 * 2**20


def last_level_cache_bytes() -> int:
    """Size of the CPU's last-level cache (one instance), from sysfs; 16 MiB where unknown."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        value = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
        best = max(best, value)
    return best or _FALLBACK_CACHE


def largest_activation_bytes(model: Backbone, input_size: int, precision: str = "float32") -> int:
    """Bytes of the largest module output of one image's forward pass (one probe on the CPU)."""
    peak = [0]

    def hook(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            peak[0] = max(peak[0], output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    dtype = PRECISIONS[precision]
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            model.forward_features(torch.zeros(1, 3, input_size, input_size).to(memory_format=torch.channels_last))
    finally:
        for handle in handles:
            handle.remove()
    return peak[0]


def cpu_forward_batch(model: Backbone, input_size: int, precision: str = "float32",
                      override: int | None = None) -> int:
    """Images per CPU forward pass: the largest activations of a pass stay in cache.

    On the CPU throughput falls steeply once a layer's output outgrows the
    last-level cache (efficientnet_lite0 at 224 px, 2 cores: 115 img/s at 4
    images per pass, 37 at 32; the "compute" rows of the levers table in
    benchmarks/results/perf_extract.md).
    """
    if override is not None:
        return override
    budget = 0.6 * last_level_cache_bytes()
    return max(1, int(budget // max(1, largest_activation_bytes(model, input_size, precision))))


def map_size(spec: BackboneSpec, model: Backbone, input_size: int) -> tuple[int, int]:
    """(h, w) of the maps at this input size, measured rather than computed (padding rules differ)."""
    with torch.inference_mode():
        out = model.forward_features(torch.zeros(1, 3, input_size, input_size))
    return int(out.shape[2]), int(out.shape[3])


def imagenet_classes() -> list[str]:
    import torchvision

    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def extract_rows(job: ExtractJob) -> ExtractResult:
    """One process extracting every row of ``job`` into ``job.output`` (a whole file or one shard)."""
    options = job.options
    options.validate()
    if not job.records:
        raise FeatkitError(f"no images to extract under {job.root}; check the dataset root and the dataset layout")
    device = resolve_device(options.device)
    spec, model, weights = load_backbone(options.model, options.weights, options.layer)
    provenance = job_provenance(job, spec, model, weights.identifier, weights.sha256)
    head = None
    if model.head is not None:
        head_classes = (imagenet_classes() if spec.head == "imagenet-1k"
                        else [str(i) for i in range(model.head.out_features)])
        head = Head(model.head.weight.detach().numpy(), model.head.bias.detach().numpy(), head_classes)
    writer = FeatureWriter.open(job.output, provenance, job.records, job.classes, job.splits, head,
                                overwrite=options.overwrite, crop_boxes=job.crops,
                                moved_root=options.moved_root)
    with writer:
        start = writer.rows_done
        total = len(job.records)
        if writer.complete:
            log.info("%s is already complete (%d images); nothing to do", job.output, total)
            return ExtractResult(Path(job.output), total, 0, start, [])
        if start:
            log.info("resuming %s at image %d of %d", job.output, start, total)
        if job.progress:
            job.progress(start, total)
        failed = _run(job, model.to(device), writer, start, provenance, spec, device)
        writer.finish()
    return ExtractResult(Path(job.output), total, total - start, start, failed)


def job_provenance(
    job: ExtractJob, spec: BackboneSpec, model: Backbone, weights_identifier: str, weights_sha256: str
) -> Provenance:
    """The provenance a run of ``job`` records (and compares on resume)."""
    input_size = job.options.image_size or spec.input_size
    attrs: dict[str, object] = {"crop": job.crop_source} if job.crops is not None else {}
    attrs.update(job.extra)
    return Provenance(
        backbone=spec.name,
        weights=weights_identifier,
        weights_sha256=weights_sha256,
        feature_layer=spec.feature_layer,
        channels=spec.channels,
        map_size=map_size(spec, model, canvas_input(job.options.resize, input_size)),
        input_size=input_size,
        mean=spec.mean,
        std=spec.std,
        dataset=job.dataset,
        dataset_root=str(Path(job.root).resolve()),
        precision=job.options.precision,
        resize=job.options.resize,
        tta=job.options.tta,
        maps=job.options.maps,
        interpolation=spec.interpolation,
        orientation="exif" if job.options.exif_transpose else "stored",
        extra=attrs,
    )


class _Committer:
    """Hands finished batches to ``FeatureWriter.write_batch``, in a background thread or inline.

    ``submit`` first waits for the batch in flight (one at most), so writes stay
    in order and memory stays bounded. ``wait`` re-raises a failed write in the
    caller's thread. ``drain`` (always called, also on Ctrl-C or an exception)
    lets the batch in flight finish before the file is closed: an interrupted
    run ends with every committed row flushed and nothing half-written by us.
    """

    def __init__(self, writer: FeatureWriter, threaded: bool) -> None:
        self.writer = writer
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="featkit-writer") if threaded else None
        self._pending: Future[None] | None = None

    def submit(self, *args: object) -> None:
        self.wait()
        if self._pool is None:
            self.writer.write_batch(*args)  # type: ignore[arg-type]
        else:
            self._pending = self._pool.submit(self.writer.write_batch, *args)  # type: ignore[arg-type]

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def drain(self) -> None:
        """Wait for the write in flight however we got here (a second Ctrl-C does not cut it short)."""
        if self._pool is None:
            return
        while True:
            try:
                self._pool.shutdown(wait=True)
                break
            except KeyboardInterrupt:
                continue


class _InlineBatches:
    """``--workers 0``: batches decoded in the main process by a pool of threads, one batch at a time.

    Pillow releases the GIL while it decodes and resizes, so the threads use
    every core the network's threads use, and only while the network waits:
    decoding never preempts the OpenMP team as worker processes do.
    """

    def __init__(self, view: ImageFolderView, rows: range, batch_size: int, threads: int, pin: bool) -> None:
        self.view, self.rows, self.batch_size, self.threads, self.pin = view, rows, batch_size, threads, pin

    def __iter__(self) -> Iterator[Batch]:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="featkit-decode") as pool:
            for lo in range(self.rows.start, self.rows.stop, self.batch_size):
                indices = range(lo, min(lo + self.batch_size, self.rows.stop))
                batch = collate(list(pool.map(self.view.__getitem__, indices)))
                yield batch.pin_memory() if self.pin else batch


def shape_windows(batches: Iterable[Batch], window: int, stop_at_errors: bool, pin: bool = False
                  ) -> Iterator[Batch]:
    """Consecutive batches merged until they hold at least ``window`` images (:func:`concat_batches`).

    Rows stay in order and a window is committed as one write, so ``rows_done``
    still advances over a contiguous prefix and a resumed run starts on the same
    window boundaries. With ``stop_at_errors`` a batch holding an unreadable
    image is yielded alone, after the window before it, so the rows before it
    are saved when the run stops there.
    """
    pending: list[Batch] = []
    count = 0
    for batch in batches:
        if stop_at_errors and any(batch.errors):
            if pending:
                yield _merged(pending, pin)
                pending, count = [], 0
            yield batch
            continue
        pending.append(batch)
        count += len(batch.errors)
        if count >= window:
            yield _merged(pending, pin)
            pending, count = [], 0
    if pending:
        yield _merged(pending, pin)


def _merged(batches: list[Batch], pin: bool) -> Batch:
    merged = concat_batches(batches)
    return merged.pin_memory() if pin and len(batches) > 1 else merged


def _run(
    job: ExtractJob,
    model: Backbone,
    writer: FeatureWriter,
    start: int,
    provenance: Provenance,
    spec: BackboneSpec,
    device: torch.device,
) -> list[str]:
    view = ImageFolderView(Path(job.root), [r.path for r in job.records], provenance.input_size, crops=job.crops,
                           resize=provenance.resize, stride=spec.stride, interpolation=provenance.interpolation,
                           exif=provenance.orientation == "exif")
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", job.options.world_size))
    workers, threads = loader_plan(device, job.options.workers, processes)
    with _intra_op_threads(threads):
        return _run_loader(job, model, writer, view, start, spec, device, workers, provenance.map_size)


@contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block (None: left alone), restored after."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _run_loader(
    job: ExtractJob,
    model: Backbone,
    writer: FeatureWriter,
    view: ImageFolderView,
    start: int,
    spec: BackboneSpec,
    device: torch.device,
    workers: int,
    canvas: tuple[int, int],
) -> list[str]:
    options, progress, total = job.options, job.progress, len(job.records)
    loader: Iterable[Batch]
    if workers:
        loader = DataLoader(
            Subset(view, range(start, total)),
            batch_size=options.batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=device.type == "cuda",
            prefetch_factor=4,
        )
    else:
        decode_threads = options.decode_threads or max(1, min(_cores(), torch.get_num_threads()))
        loader = _InlineBatches(view, range(start, total), options.batch_size, decode_threads,
                                device.type == "cuda")
    if view.resize == "short-side":
        loader = shape_windows(loader, options.shape_window or SHAPE_WINDOW, options.on_error == "fail",
                               device.type == "cuda")
    model = model.to(memory_format=torch.channels_last)
    autocast_dtype = PRECISIONS[options.precision]
    chunk = (cpu_forward_batch(model, view.input_size, options.precision, options.forward_batch)
             if device.type == "cpu" else None)
    failed: list[str] = []
    row = start  # first row of the batch being computed
    committed = start  # rows known to be flushed to the file
    committer = _Committer(writer, options.async_writes)
    try:
        with torch.inference_mode():
            for batch in loader:
                bad = [e for e in batch.errors if e]
                if bad and options.on_error == "fail":
                    committer.wait()
                    raise FeatkitError(
                        f"cannot read image {bad[0]}; fix or remove it, or re-run with on_error='skip' "
                        f"({row} of {total} images are saved and the run resumes from there)"
                    )
                gap_t, maps = forward_batch(model, batch, spec.mean, spec.std, device, autocast_dtype, chunk,
                                            view.input_size, options.tta, canvas if options.maps else None)
                gap = gap_t.cpu().numpy()
                status = np.full(len(gap), STATUS_OK, dtype=np.int8)
                for i, err in enumerate(batch.errors):
                    if err:
                        status[i] = STATUS_FAILED
                        gap[i] = np.nan
                        failed.append(err)
                        log.warning("skipped unreadable image %s", err)
                map_array = maps.to(torch.float16).cpu().numpy() if maps is not None else None
                # the previous batch was written while this one ran: report it, then hand this one over
                committer.wait()
                if progress and committed < row:
                    committed = row
                    progress(committed, total)
                committer.submit(row, gap, batch.sizes, status, batch.errors, map_array, batch.fingerprints)
                row += len(gap)
        committer.wait()
    finally:
        committer.drain()
    if progress and committed < row:
        progress(row, total)
    return failed


def forward_batch(
    model: Backbone,
    batch: Batch,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    dtype: torch.dtype | None,
    chunk: int | None,
    input_size: int,
    tta: str = "none",
    canvas: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GAP features (B, K) float32 of a batch, and its maps (B, K, h, w) float32 in ``canvas`` when asked.

    Each shape bucket of the batch runs on its own, so no padding enters the
    network or the GAP. Maps smaller than the canvas (``short-side``) are
    placed top-left and the rest is NaN: the valid extent travels with the
    maps and readers trim it (:func:`featkit.cam.maps.valid_extent`). With
    ``tta="flip"`` the mirrored image runs too and its maps are flipped back
    before the two are averaged. ``chunk`` (images per CPU pass at
    ``input_size``) shrinks with the area of larger inputs; a bucket is cut into
    near-equal passes of at most that many (7 at 3 per pass: 3 + 2 + 2, not 3 + 3 + 1).
    """
    gap: torch.Tensor | None = None
    out: torch.Tensor | None = None
    for positions, pixels in batch.groups:
        x = normalize_batch(pixels.to(device, non_blocking=True), mean, std)
        x = x.contiguous(memory_format=torch.channels_last)
        n = len(x)
        if tta == "flip":
            x = torch.cat([x, x.flip(3)]).contiguous(memory_format=torch.channels_last)
        per_pass = chunk and max(1, chunk * input_size * input_size // (x.shape[2] * x.shape[3]))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if per_pass and per_pass < len(x):  # near-equal passes: a lone last image costs ~2x per image
                parts = x.tensor_split(-(-len(x) // per_pass))
                maps = torch.cat([model.forward_features(part) for part in parts])
            else:
                maps = model.forward_features(x)
        maps = maps.float()
        if tta == "flip":
            maps = (maps[:n] + maps[n:].flip(3)) / 2
        pos = torch.from_numpy(positions).to(maps.device)
        if gap is None:
            gap = torch.empty((len(batch.errors), maps.shape[1]), dtype=torch.float32, device=maps.device)
        gap[pos] = maps.mean(dim=(2, 3))
        if canvas is not None:
            h, w = maps.shape[2:]
            if h > canvas[0] or w > canvas[1]:
                raise RuntimeError(f"maps of {h}x{w} do not fit the {canvas[0]}x{canvas[1]} canvas of this file")
            if out is None:
                out = torch.full((len(batch.errors), maps.shape[1], *canvas), float("nan"), device=maps.device)
            out[pos, :, :h, :w] = maps
    assert gap is not None  # a batch has at least one image
    return gap, out
