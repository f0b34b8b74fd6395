"""Multi-process extraction: one shard file per rank, merged into one features file.

``torchrun --nproc_per_node N -m featkit extract ROOT --dataset NAME -o out.h5``
starts N processes; each extracts a contiguous block of rows into its own
shard (``out.rank0-of-N.h5`` ...), which is an ordinary features file of its
block (same layout, same resume rules) plus the attributes ``shard_rank``,
``shard_world_size``, ``shard_start``, ``shard_stop`` and ``shard_total``.
When every rank is done (a collective over torch.distributed: gloo on the CPU,
NCCL on GPUs) rank 0 merges the shards into ``out.h5`` with
:func:`merge_shards`, the same file a single process writes, and deletes the
shards. Without a process group (plain library calls with ``rank`` and
``world_size``) each call writes its shard and ``featkit merge`` joins them.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import torch

from featkit.data.base import ImageRecord
from featkit.errors import FeatkitError
from featkit.features.extractor import ExtractJob, ExtractResult, extract_rows, job_provenance, resolve_device
from featkit.features.lock import OutputLock, remove_stale_temps
from featkit.features.schema import RUN_KEYS, SHARD_KEYS, Provenance, plain
from featkit.features.store import PARTIAL_SUFFIX, SPACE_SLACK_BYTES, FeatureWriter, Head
from featkit.models import load_backbone
from featkit.outputs import check_output_file, require_room

log = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT = _dt.timedelta(hours=24)
"""How long a rank waits at the end for the slowest one (a resumed rank may finish hours earlier)."""

_MERGE_BLOCK = 256


def shard_path(output: str | Path, rank: int, world_size: int) -> Path:
    """``out.h5`` -> ``out.rank0-of-2.h5``: where ``rank`` of ``world_size`` writes its rows."""
    out = Path(output)
    return out.with_name(f"{out.stem}.rank{rank}-of-{world_size}{out.suffix}")


def shard_block(n_images: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``rank``: contiguous blocks whose sizes differ by at most one."""
    return rank * n_images // world_size, (rank + 1) * n_images // world_size


# ---------------------------------------------------------------- extraction


def extract_sharded(job: ExtractJob) -> ExtractResult:
    """This rank's block of ``job`` into its shard; then, in a process group, rank 0 merges every shard.

    Returns the merged file's result on rank 0 after a merge, else this shard's.
    ``job.progress`` counts the block's rows.
    """
    options = job.options
    options.validate()
    rank, world = options.rank, options.world_size
    total = len(job.records)
    if world > total:
        raise FeatkitError(f"world_size {world} is more than the {total} images; use at most {total} processes")
    output = Path(job.output)
    device = _rank_device(resolve_device(options.device))
    job = replace(job, options=replace(options, device=str(device)))
    if output.exists() and not options.overwrite and _merged_output_is_complete(job):
        log.info("%s is already complete (%d images); nothing to do", output, total)
        return ExtractResult(output, total, 0, total, [])

    start, stop = shard_block(total, rank, world)
    shard = shard_path(output, rank, world)
    extra = {"shard_rank": rank, "shard_world_size": world, "shard_start": start, "shard_stop": stop,
             "shard_total": total}
    with process_group(device, rank, world) as grouped:
        ok = False
        try:
            result = extract_rows(job.rows(start, stop, shard, extra))
            ok = True
        finally:
            # every rank reaches this point, also when its extraction failed, so nobody waits forever
            all_ok = _all_ranks_ok(ok, device) if grouped else ok
        if not grouped:
            log.info("wrote shard %s; join the shards with `featkit merge -o %s %s ...`", shard, output,
                     shard_path(output, 0, world))
            return result
        if not all_ok:
            raise FeatkitError(
                f"another rank failed, so the shards were not merged into {output}; "
                "re-run the same command to resume every shard"
            )
        if rank != 0:
            return result
        merged = merge_shards([shard_path(output, r, world) for r in range(world)], output,
                              keep=options.keep_shards, overwrite=options.overwrite)
        return ExtractResult(merged, total, result.rows_written, result.resumed_from, result.failed)


def _rank_device(device: torch.device) -> torch.device:
    """One GPU per local rank (``LOCAL_RANK``, set by torchrun) when the device is an unnumbered cuda."""
    if device.type != "cuda" or device.index is not None:
        return device
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    return torch.device("cuda", local % max(torch.cuda.device_count(), 1))


def _merged_output_is_complete(job: ExtractJob) -> bool:
    """True when ``job.output`` is this job's finished merged file; FeatkitError when it is anything else."""
    spec, model, weights = load_backbone(job.options.model, job.options.weights, job.options.layer)
    provenance = job_provenance(job, spec, model, weights.identifier, weights.sha256)
    if not FeatureWriter.is_complete(job.output, provenance, job.records, job.crops):
        raise FeatkitError(f"{job.output} holds an unfinished single-process run; resume it with world_size=1, "
                           "or pass overwrite=True to start again in shards")
    return True


@contextmanager
def process_group(device: torch.device, rank: int, world_size: int) -> Iterator[bool]:
    """Yields whether a torch.distributed process group joins the ranks.

    Uses the group the caller already initialised; else initialises one from
    the environment torchrun sets (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
    ``WORLD_SIZE``): gloo on the CPU, NCCL on a GPU; and destroys it at the end.
    Yields False (no group: shards only) when neither is there.
    """
    import torch.distributed as dist

    if not dist.is_available():
        yield False
        return
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
            raise FeatkitError(
                f"rank {rank} of world_size {world_size} disagrees with the torch.distributed group "
                f"(rank {dist.get_rank()} of {dist.get_world_size()}); leave them to their defaults under torchrun"
            )
        yield True
        return
    env = os.environ
    if not ("MASTER_ADDR" in env and "MASTER_PORT" in env and int(env.get("WORLD_SIZE", "1")) > 1):
        yield False
        return
    if (int(env.get("RANK", rank)), int(env["WORLD_SIZE"])) != (rank, world_size):
        raise FeatkitError(
            f"rank {rank} of world_size {world_size} disagrees with RANK={env.get('RANK')} "
            f"WORLD_SIZE={env['WORLD_SIZE']} set by torchrun; leave them to their defaults"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT)
    try:
        yield True
    finally:
        dist.destroy_process_group()


def _all_ranks_ok(ok: bool, device: torch.device) -> bool:
    """All-reduce (min) of every rank's success flag: the barrier before the merge."""
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


# ---------------------------------------------------------------- merging


def merge_shards(shard_paths: Sequence[str | Path], output: str | Path, *, keep: bool = False,
                 overwrite: bool = False) -> Path:
    """Join the complete shards of one multi-process extraction into ``output``; returns ``output``.

    Checks that the shards belong together (same provenance, classes and head;
    ranks 0..N-1 once each; disjoint contiguous blocks covering every row; all
    complete) and writes the file a single process would have written (paths,
    labels, splits, boxes, sizes, status, features/gap and features/maps as
    stored). The output appears atomically (written beside it, then renamed);
    the shards are deleted after a successful merge unless ``keep``.
    """
    output = Path(output)
    paths = [Path(p) for p in shard_paths]
    if not paths:
        raise FeatkitError("no shard files given; pass the out.rank<R>-of-<N>.h5 files of one extraction")
    check_output_file(output, overwrite=overwrite, example="features.h5", inputs=paths)
    with OutputLock(output):
        remove_stale_temps(output, partial_suffix=PARTIAL_SUFFIX)
        if output.exists() and not overwrite:  # finished by another merge while we waited for the lock
            raise FeatkitError(f"{output} already exists; choose another output or remove it first")
        shards = [_open_shard(p) for p in paths]
        try:
            shards.sort(key=lambda h: int(h.attrs["shard_rank"]))
            _check_shards(shards)
            # the merged file holds what the shards hold: refuse before writing when it may not fit
            require_room(output, int(sum(p.stat().st_size for p in paths) * 1.05) + SPACE_SLACK_BYTES)
            partial = output.with_name(output.name + PARTIAL_SUFFIX)
            try:
                _write_merged(shards, partial)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        finally:
            for h5 in shards:
                h5.close()
        os.replace(partial, output)
    if not keep:
        for p in paths:
            p.unlink()
    log.info("merged %d shards into %s", len(paths), output)
    return output


def _open_shard(path: Path) -> h5py.File:
    if not path.is_file():
        raise FeatkitError(f"shard {path} does not exist; pass the out.rank<R>-of-<N>.h5 files of one extraction")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise FeatkitError(f"shard {path} is not a readable HDF5 file ({exc}); re-run its rank to rebuild it") from exc
    missing = [k for k in SHARD_KEYS if k not in h5.attrs]
    if "schema_version" not in h5.attrs or missing:
        h5.close()
        raise FeatkitError(f"{path} is not a shard of a multi-process extraction (no {', '.join(missing) or 'schema'} "
                           "attributes); merge only the out.rank<R>-of-<N>.h5 files featkit wrote")
    return h5


def _check_shards(shards: list[h5py.File]) -> None:
    first = shards[0]
    world = int(first.attrs["shard_world_size"])
    total = int(first.attrs["shard_total"])
    ranks = [int(h.attrs["shard_rank"]) for h in shards]
    if ranks != list(range(world)) or len(shards) != world:
        missing = sorted(set(range(world)) - set(ranks))
        raise FeatkitError(
            f"the shards must be ranks 0..{world - 1} of one {world}-process run, once each; got ranks "
            f"{ranks}" + (f" (missing {missing})" if missing else "") + f" from {', '.join(h.filename for h in shards)}"
        )
    same = [k for k in first.attrs if k not in RUN_KEYS and k not in ("shard_rank", "shard_start", "shard_stop")]
    for h5 in shards[1:]:
        keys = set(h5.attrs) - set(RUN_KEYS) - {"shard_rank", "shard_start", "shard_stop"}
        for key in sorted(set(same) | keys):
            have, want = plain(h5.attrs.get(key)), plain(first.attrs.get(key))
            if have != want:
                raise FeatkitError(
                    f"shards {first.filename} and {h5.filename} come from different runs ({key}: {want} vs {have}); "
                    "merge only the shards of one extraction"
                )
        for name in ("classes", "head/weight", "head/bias", "head/classes"):
            a = first[name][:] if name in first else None
            b = h5[name][:] if name in h5 else None
            if a is None or b is None:
                differ = (a is None) != (b is None)
            else:
                differ = not np.array_equal(a, b)
            if differ:
                raise FeatkitError(f"shards {first.filename} and {h5.filename} differ in {name}; "
                                   "merge only the shards of one extraction")
    expected_start = 0
    for h5 in shards:
        start, stop = int(h5.attrs["shard_start"]), int(h5.attrs["shard_stop"])
        n = int(h5.attrs["n_images"])
        if start != expected_start or stop - start != n or len(h5["images/path"]) != n:
            raise FeatkitError(
                f"shard {h5.filename} holds rows {start}..{stop} but rows from {expected_start} were expected; "
                "the shards must be disjoint contiguous blocks of one run"
            )
        if int(h5.attrs["rows_done"]) != n or not bool(h5.attrs["complete"]):
            raise FeatkitError(
                f"shard {h5.filename} is unfinished ({int(h5.attrs['rows_done'])} of {n} rows); re-run the same "
                "extraction to resume it, then merge"
            )
        expected_start = stop
    if expected_start != total:
        raise FeatkitError(f"the shards cover rows 0..{expected_start} of {total}; some rank's shard is missing")


def _records_of(shards: list[h5py.File]) -> tuple[list[ImageRecord], np.ndarray]:
    records: list[ImageRecord] = []
    splits = []
    for h5 in shards:
        images = h5["images"]
        paths = images["path"].asstr()[:]
        labels = images["label"][:]
        owners = images["boxes_image"][:]
        boxes = images["boxes"][:]
        attributes = images["attributes"][:] if "attributes" in images else None
        per_image: list[list[tuple[float, ...]]] = [[] for _ in range(len(paths))]
        for owner, box in zip(owners, boxes):
            per_image[int(owner)].append(tuple(float(v) for v in box))
        for i, path in enumerate(paths):
            records.append(ImageRecord(str(path), int(labels[i]), "", tuple(per_image[i]),  # type: ignore[arg-type]
                                       None if attributes is None else tuple(attributes[i].tolist())))
        splits.append(images["split"].asstr()[:].astype(object))
    return records, np.concatenate(splits)


def _write_merged(shards: list[h5py.File], partial: Path) -> None:
    first = shards[0]
    provenance = Provenance.from_attrs(dict(first.attrs))
    records, splits = _records_of(shards)
    head = None
    if "head" in first:
        group = first["head"]
        head = Head(group["weight"][:], group["bias"][:], list(group["classes"].asstr()[:]))
    classes = list(first["classes"].asstr()[:])
    crops = np.concatenate([h["images/crop_box"][:] for h in shards]) if "images/crop_box" in first else None
    writer = FeatureWriter.open(partial, provenance, records, classes, splits, head, overwrite=True, crop_boxes=crops)
    with writer:
        writer.h5.attrs["created"] = min(str(h.attrs["created"]) for h in shards)
        row = 0
        for h5 in shards:
            n = int(h5.attrs["n_images"])
            for lo in range(0, n, _MERGE_BLOCK):
                hi = min(n, lo + _MERGE_BLOCK)
                errors = list(h5["images/error"].asstr()[lo:hi])
                prints = list(h5["images/fingerprint"].asstr()[lo:hi]) if "images/fingerprint" in h5 else None
                writer.write_batch(row + lo, h5["features/gap"][lo:hi], h5["images/size"][lo:hi],
                                   h5["images/status"][lo:hi], errors, fingerprints=prints)
            if provenance.maps:
                _copy_map_chunks(h5["features/maps"], writer.h5["features/maps"], row)
            row += n
        writer.h5.flush()
        writer.finish()
    # FeatureWriter.open renamed <partial>.partial to <partial>; nothing else to clean up


def _copy_map_chunks(src: h5py.Dataset, dst: h5py.Dataset, offset: int) -> None:
    """Copy the per-image compressed chunks as stored (no decompress/recompress); rows of ``src`` go to ``offset``."""
    same_layout = (src.chunks == dst.chunks and src.compression == dst.compression
                   and src.compression_opts == dst.compression_opts and src.shuffle == dst.shuffle
                   and src.chunks is not None and src.chunks[0] == 1)
    zeros = (0,) * (src.ndim - 1)
    for i in range(src.shape[0]):
        if same_layout:
            try:
                mask, data = src.id.read_direct_chunk((i, *zeros))
            except (KeyError, OSError, RuntimeError):  # never written: leave the fill value
                continue
            dst.id.write_direct_chunk((offset + i, *zeros), data, mask)
        else:
            dst[offset + i] = src[i]
