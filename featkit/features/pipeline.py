"""The extraction entry points: a dataset (or any job) into features.h5, on one process or sharded.

``extract`` is what a Python user calls; it picks the single-process
extractor (:mod:`featkit.features.extractor`) or one shard per rank plus a merge
(:mod:`featkit.features.distributed`) from ``options.world_size``.
"""

from __future__ import annotations

from pathlib import Path

from featkit.data.base import Dataset
from featkit.data.images import upright_records
from featkit.features.distributed import extract_sharded
from featkit.features.extractor import ExtractJob, ExtractOptions, ExtractResult, Progress, extract_rows
from featkit.progress import progress_callback


def run_job(job: ExtractJob) -> ExtractResult:
    """Extract ``job``: in this process, or this rank's shard (then merged) when ``world_size > 1``."""
    if job.options.world_size > 1:
        return extract_sharded(job)
    return extract_rows(job)


def extract(
    dataset: Dataset,
    output: str | Path,
    options: ExtractOptions | None = None,
    progress: Progress | bool | None = True,
) -> ExtractResult:
    """GAP features (and maps with ``options.maps``) of every image of ``dataset`` into ``output``.

    Classes, splits and boxes come from the dataset's reader and manifest (or the
    holdout of :meth:`Dataset.with_holdout`, recorded as ``split_protocol``). The
    file is resumable: calling again after an interruption continues where it
    stopped. ``progress``: True draws a ``tqdm.auto`` bar (notebooks included), False is silent, a function
    ``progress(done, total)`` is called after every committed batch.
    """
    options = options or ExtractOptions()
    records = dataset.records()
    if options.exif_transpose:  # annotations are on the stored grid: their boxes go upright with the pixels
        records = upright_records(Path(dataset.root), records)
    job = ExtractJob(
        root=Path(dataset.root), records=records, classes=dataset.classes(), splits=dataset.split_table(records),
        dataset=dataset.manifest.name, output=Path(output), options=options,
        progress=progress_callback(progress, f"extract {dataset.manifest.name}"),
        extra={"split_protocol": dataset.protocol.describe()},
    )
    return run_job(job)
