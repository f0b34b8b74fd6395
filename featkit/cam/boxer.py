"""maps -> CAM -> upsample -> box: the one path from conv maps to a box in original pixels.

Localization, the CAM pictures, the crops of Table 4, the units of Sec. 5 and
the demo all go through :class:`CamBoxer`, so a box means the same thing in
every report and picture: the CAM of the class weights (all of them, or only
the positive ones) or another named map of :mod:`featkit.cam.methods`, upsampled to the original image, boxed by the paper's
rule under one :class:`~featkit.cam.maps.CamOptions`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from featkit.cam.boxes import Box, box_from_cam
from featkit.cam.dgl import image_gradient_maps, image_method_maps
from featkit.cam.foreground import ForegroundModel
from featkit.cam.maps import CamOptions, normalize_cam, upsample
from featkit.cam.methods import GRADIENT_METHODS, LEARNED_METHODS, method_maps
from featkit.cam.placement import covers_image, place, trim_padding
from featkit.errors import FeatkitError
from featkit.features.mapsource import MapSource, dataset_root


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Run per-image CAM work (upsampling, normalising one map) on one torch thread.

    Those tensors are a few hundred thousand floats: thread start-up costs
    more than it saves, and on a busy machine a parallel region stalls on a
    descheduled thread (a single 375 x 500 min-max normalisation waits for
    the slowest thread when other jobs run). The previous setting is
    restored, and no model runs inside.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def paper_box(cam: np.ndarray, options: CamOptions) -> Box:
    """The paper's box of one upsampled, NOT yet normalised CAM under ``options``.

    Thresholding the normalised map at ``t`` is thresholding the raw map at
    ``t`` of its max (or of its min-max range), so the full-size
    normalisation pass is skipped; only relu-max at ``t = 0`` differs and
    takes the long way.
    """
    if options.normalization == "minmax":
        return box_from_cam(cam, options.threshold, relative_to="minmax", close=options.close)
    if options.normalization == "relu-max" and options.threshold <= 0:
        return box_from_cam(normalize_cam(cam, "relu-max"), options.threshold, relative_to="max", close=options.close)
    return box_from_cam(cam, options.threshold, relative_to="max", close=options.close)


@dataclass(frozen=True)
class CamBoxer:
    """CAMs of class weights ``weight`` (C, K) on conv maps, and their boxes under ``options``.

    ``foreground``: the model a learned method (``foreground``, ``foreground-class``, ``cam-foreground``)
    fitted on the training boxes; :func:`featkit.cam.calibration.calibrate` fits it.
    """

    weight: np.ndarray
    options: CamOptions = CamOptions()
    foreground: ForegroundModel | None = None

    def __post_init__(self) -> None:
        if np.ndim(self.weight) != 2:
            raise FeatkitError(f"class weights must be (C, K), got shape {np.shape(self.weight)}")
        if self.learned and self.foreground is None:
            raise FeatkitError(f"method {self.options.method!r} learns where objects are from the training boxes; "
                               "pass calibration=calibrate(features, classifier, train_rows, options), whose "
                               "boxer(weight) carries the fitted model")

    @classmethod
    def for_units(cls, channels: int, options: CamOptions = CamOptions()) -> CamBoxer:
        """The "CAM" of unit k is its own map f_k: identity weights, one class per unit (paper Sec. 5)."""
        return cls(np.eye(channels, dtype=np.float32), options)

    def cams(self, maps: np.ndarray, classes: np.ndarray | int) -> np.ndarray:
        """Raw maps (n, T, h, w) of ``options.method`` for ``classes`` ((n,), (n, T) or one int) on maps (n, K, h, w).

        The paper's CAM unless the options name another method of :mod:`featkit.cam.methods`.
        """
        if self.options.multi_scale:
            raise FeatkitError(f"maps at scales {list(self.options.scales)} are computed from the images, not from "
                               "given conv maps; use CamBoxer.row_cams (or scales=(1.0,))")
        return method_maps(self.options.method, maps, self.options.cam_weight(self.weight), classes, self.foreground)

    @property
    def learned(self) -> bool:
        """Whether the map is learned from training boxes (``foreground`` must be given)."""
        return self.options.method in LEARNED_METHODS

    @property
    def needs_images(self) -> bool:
        """Whether the maps come from the backbone run again on the images (gradients, or other input sizes)."""
        return self.options.method in GRADIENT_METHODS or self.options.multi_scale

    def batches(
        self, source: MapSource, rows: np.ndarray, batch: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(rows, conv maps) from ``source``; methods that need the images get the rows only (maps None)."""
        if self.needs_images:
            for lo in range(0, len(rows), batch):
                yield rows[lo : lo + batch], None
        else:
            yield from source.batches(rows, batch)

    def row_cams(self, source: MapSource, rows: np.ndarray, maps: np.ndarray | None, classes: np.ndarray) -> np.ndarray:
        """:meth:`cams` of ``rows``: from their conv maps, or from their images (dgl, multi-scale)."""
        if not self.needs_images:
            assert maps is not None  # batches() gives maps to every method that does not need the images
            return self.cams(maps, classes)
        what = (f"method {self.options.method!r}" if self.options.method in GRADIENT_METHODS
                else f"scales {list(self.options.scales)}")
        root = dataset_root(source.features, source.root)
        if root is None:
            raise FeatkitError(f"{what} runs the backbone on the images, but "
                               f"{source.features.path} records no dataset root on disk; pass root=DATASET_ROOT")
        weight = self.options.cam_weight(self.weight)
        if self.options.method not in GRADIENT_METHODS:
            return image_method_maps(source.features, root, rows, self.options.method, weight, classes,
                                     source.device, scales=self.options.scales, foreground=self.foreground)
        layers = tuple(name.strip() for name in self.options.layer.split(",") if name.strip()) or ("last",)
        return image_gradient_maps(source.features, root, rows, weight, classes, layers, source.device,
                                   scales=self.options.scales, enhance=self.options.enhance)

    def upsample(
        self, cams: np.ndarray, size: tuple[int, int], frame: tuple[float, float, float, float] | np.ndarray | None = None
    ) -> np.ndarray:
        """CAMs (..., h, w) at the original image's ``size = (width, height)``, not normalised.

        NaN padding (maps of ``short-side`` files) is trimmed first. ``frame``
        (x0, y0, x1, y1), the part of the image the maps cover (``crop`` files,
        :meth:`~featkit.features.mapsource.MapSource.frames`), receives the CAM;
        outside it the value is one no threshold keeps: the CAM's minimum for
        min-max normalisation, else min(minimum, 0).
        """
        cams = trim_padding(np.asarray(cams, dtype=np.float32))
        if covers_image(frame, size):
            return np.asarray(upsample(cams, size, self.options.upsample))
        assert frame is not None  # covers_image(None, ...) is True
        lowest = cams.reshape(*cams.shape[:-2], -1).min(axis=-1)
        outside = lowest if self.options.normalization == "minmax" else np.minimum(lowest, 0.0)
        return place(cams, size, frame, self.options.upsample, outside)

    def box(self, upsampled: np.ndarray) -> Box:
        """The paper's box of one upsampled CAM (H, W)."""
        return paper_box(upsampled, self.options)

    def display(self, upsampled: np.ndarray) -> np.ndarray:
        """Upsampled CAMs normalised as the options say, for drawing."""
        return np.asarray(normalize_cam(upsampled, self.options.normalization))

    def boxes(
        self, maps: np.ndarray, classes: np.ndarray, sizes: Sequence[tuple[int, int]] | np.ndarray,
        frames: np.ndarray | None = None,
    ) -> np.ndarray:
        """Boxes (n, 4) of one class per image: ``classes`` (n,), ``sizes`` (n, 2) original (width, height),
        ``frames`` (n, 4) what the maps cover (None: the whole image; ``crop`` files need theirs:
        :meth:`~featkit.features.mapsource.MapSource.frames`)."""
        return self.boxes_of(self.cams(maps, np.asarray(classes))[:, 0], sizes, frames)

    def boxes_of(
        self, cams: np.ndarray, sizes: Sequence[tuple[int, int]] | np.ndarray, frames: np.ndarray | None = None
    ) -> np.ndarray:
        """Boxes (n, 4) of raw maps (n, h, w) upsampled to ``sizes`` (n, 2) original (width, height)."""
        out = np.zeros((len(cams), 4), dtype=np.float64)
        with single_threaded_torch():
            for j, cam in enumerate(cams):
                size = (int(sizes[j][0]), int(sizes[j][1]))
                out[j] = self.box(self.upsample(cam, size, None if frames is None else frames[j]))
        return out
