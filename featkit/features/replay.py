"""The backbone of a features file run again on its images, preprocessed exactly as the file records.

Three things need the network again after extraction: conv maps of a file
written without them (:func:`recompute_maps`), maps at other input scales and
gradient maps (``featkit.cam.dgl``). They all come through :class:`Replay`,
so every input geometry the file can have (``warp``, ``crop``,
``short-side`` with its shape buckets, flip TTA) is replayed the one way
extraction ran it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featkit.data.images import Batch, ImageFolderView, collate, normalize_batch
from featkit.errors import FeatkitError
from featkit.features.extractor import PRECISIONS, cpu_forward_batch, forward_batch, resolve_device
from featkit.features.schema import Provenance
from featkit.models import load_backbone
from featkit.models.registry import Backbone, BackboneSpec

InputGroup = tuple[np.ndarray, torch.Tensor]
"""(positions in the batch, normalised input (n, 3, h, w) on the device): one group per input shape."""


def weights_argument(attrs: dict[str, Any]) -> str | None:
    """The ``weights`` value that loads the weights a features file records."""
    identifier = str(attrs.get("weights", ""))
    # packaged and torchvision weights are the default source; 'random' and file paths are given as such
    return None if identifier.startswith(("efficientnet-lite", "torchvision:")) else identifier


def backbone_from_provenance(attrs: dict[str, Any], device: str = "auto") -> tuple[BackboneSpec, Backbone, torch.device]:
    """The backbone that wrote a features file, with the same weights (checked by sha256)."""
    name = str(attrs["backbone"])
    spec, model, info = load_backbone(name, weights_argument(attrs), str(attrs.get("feature_layer") or "") or None)
    if info.sha256 != str(attrs.get("weights_sha256", "")):
        raise FeatkitError(
            f"the weights of {name} available now ({info.identifier}) differ from those that wrote the "
            "features (sha256 mismatch); re-extract with maps=True or restore the original weight file"
        )
    dev = resolve_device(device)
    return spec, model.to(dev), dev


@dataclass(frozen=True)
class Replay:
    """A file's backbone (eval mode, on ``device``) and its recorded preprocessing."""

    spec: BackboneSpec
    model: Backbone
    device: torch.device
    provenance: Provenance

    @classmethod
    def of(cls, attrs: dict[str, Any], device: str = "auto") -> Replay:
        spec, model, dev = backbone_from_provenance(attrs, device)
        model.eval()
        return cls(spec, model, dev, Provenance.from_attrs(attrs))

    @property
    def flip(self) -> bool:
        """Whether the file averaged each image with its mirror (flip TTA): replayed maps must do the same."""
        return self.provenance.tta == "flip"

    def batches(self, root: str | Path, paths: Sequence[str], batch_size: int, size: int | None = None
                ) -> Iterator[Batch]:
        """Decoded batches of ``batch_size`` paths under the file's geometry, resize filter and orientation;
        ``size`` overrides the file's input size (other scales). An unreadable image stops with its name."""
        size = self.provenance.input_size if size is None else int(size)
        view = ImageFolderView(Path(root), list(paths), size, resize=self.provenance.resize, stride=self.spec.stride,
                               interpolation=self.provenance.interpolation, exif=self.provenance.orientation == "exif")
        for lo in range(0, len(paths), batch_size):
            items = [view[i] for i in range(lo, min(lo + batch_size, len(paths)))]
            bad = [it.error for it in items if it.error]
            if bad:
                raise FeatkitError(f"cannot read image {bad[0]} under {root}; is root= the dataset root?")
            yield collate(items)

    def input_groups(
        self, root: str | Path, paths: Sequence[str], batch_size: int, size: int | None = None
    ) -> Iterator[list[InputGroup]]:
        """Per batch (:meth:`batches`), its normalised inputs grouped by shape (``short-side`` makes several
        shapes; ``warp`` and ``crop`` one)."""
        for batch in self.batches(root, paths, batch_size, size):
            yield [(positions, normalize_batch(pixels.to(self.device), self.provenance.mean, self.provenance.std)
                    .contiguous(memory_format=torch.channels_last)) for positions, pixels in batch.groups]


def recompute_maps(
    attrs: dict[str, Any], root: str | Path, paths: Sequence[str], batch_size: int = 16, device: str = "auto"
) -> np.ndarray:
    """Last conv maps (N, K, h, w) float32 of ``paths`` under ``root``, preprocessed as the file records.

    For features files written without maps: the network runs again on the
    images, through the extraction's own forward pass (shape buckets, flip
    TTA, the file's NaN-padded canvas).
    """
    replay = Replay.of(attrs, device)
    provenance, dev = replay.provenance, replay.device
    dtype = PRECISIONS.get(provenance.precision)
    model = replay.model.to(memory_format=torch.channels_last)  # as extraction runs it
    chunk = (cpu_forward_batch(model, provenance.input_size, provenance.precision if dtype else "float32")
             if dev.type == "cpu" else batch_size)
    out = []
    with torch.inference_mode():
        for batch in replay.batches(root, paths, batch_size):
            _, maps = forward_batch(model, batch, provenance.mean, provenance.std, dev, dtype, chunk,
                                    provenance.input_size, provenance.tta, provenance.map_size)
            assert maps is not None  # a canvas was given
            out.append(maps.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, replay.spec.channels, 1, 1), np.float32)
