"""Class activation maps (Zhou et al., CVPR 2016, Sec. 2): pure, batched math.

A network ending in global average pooling (GAP) and one linear layer scores
class ``c`` as ``S_c = sum_k w_k^c F_k + b_c`` with ``F_k`` the GAP of feature
map ``f_k``. Moving the sum over space outside gives the CAM
``M_c(x, y) = sum_k w_k^c f_k(x, y)``, whose spatial mean plus ``b_c`` is the
score again. Everything here works on numpy arrays and torch tensors alike and
returns the same kind it was given, so the same code runs on the CPU during
evaluation and on the GPU next to the backbone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from featkit.errors import FeatkitError

Array = TypeVar("Array", np.ndarray, torch.Tensor)
"""A numpy array or a torch tensor; functions return the kind they receive."""

NORMALIZATIONS: tuple[str, ...] = ("max", "minmax", "relu-max")
"""CAM normalisations: 'max' is the paper's (divide by the maximum, negatives
kept); 'minmax' is Choe et al.'s (CVPR 2020) protocol; 'relu-max' clips at 0
first, which is what the authors' MATLAB code wrote to disk (imwrite clips)."""

CAM_WEIGHTS: tuple[str, ...] = ("all", "positive")

MAP_METHODS: tuple[str, ...] = (
    "cam", "cam-positive", "objectness", "cam-objectness", "cam-objectness-mean",
    "foreground", "foreground-class", "cam-foreground", "dgl",
)
"""Names of the maps a box can be drawn on; featkit.cam.methods implements each (it checks it covers them all)."""

UPSAMPLE_MODES: tuple[str, ...] = ("bilinear", "nearest")
MAX_CLOSE = 1024
"""Largest closing square (pixels of the original image): a bounded kernel and time per mask."""
MAX_SCALE = 4.0
MAX_SCALES = 8
"""Multi-scale inputs: at most 8 scales of at most 4x the file's input size (16x its pixels)."""
"""'bilinear' (align_corners=False) is the default; 'nearest' keeps cell edges
exact, which the tests use to check the box geometry."""


@dataclass(frozen=True)
class CamOptions:
    """How CAMs become boxes; written next to every result so runs can be compared."""

    normalization: str = "max"
    threshold: float = 0.2
    upsample: str = "bilinear"
    weights: str = "all"
    """'all': the paper's CAM, every w_k^c; 'positive': only units with w_k^c > 0. With one-vs-all SVMs
    the negative weights sit on evidence shared by all classes, which lies ON the object, so positive-weight
    boxes are LARGER (closer to the object's extent), not tighter."""
    method: str = "cam"
    """Which map is boxed (featkit.cam.methods): 'cam' is the paper's; the others trade its purity for extent."""
    layer: str = "last"
    """Gradient methods (dgl) only: comma-separated backbone layers whose maps are fused ('last': the CAM maps)."""
    close: int = 0
    """Morphological closing of the thresholded mask before the largest component is boxed: a ``close`` x
    ``close`` square in pixels of the ORIGINAL image (the grid the mask is drawn on), so a gap narrower than
    that joins two blobs into one box (DGL). 0: the paper's rule."""
    scales: tuple[float, ...] = (1.0,)
    """Multi-scale inputs: the backbone runs on the image at round(S * s) px for each scale s (S the file's
    input size; in the file's own geometry, so short-side keeps each image's aspect ratio), each scale's map is resized to the scale-1 grid and the maps are averaged. Anything
    but (1.0,) recomputes from the images (stored maps exist at scale 1 only)."""
    enhance: float = 0.0
    """dgl only: step size of DGL's class-aware enhancement (0: none), relative to the activations' norm;
    see :func:`featkit.cam.dgl.gradient_maps`."""

    def __post_init__(self) -> None:
        if self.method not in MAP_METHODS:
            raise FeatkitError(f"unknown localization method {self.method!r}; use one of {', '.join(MAP_METHODS)}")
        if self.weights not in CAM_WEIGHTS:
            raise FeatkitError(f"unknown CAM weights {self.weights!r}; use one of {', '.join(CAM_WEIGHTS)}")
        if self.normalization not in NORMALIZATIONS:
            raise FeatkitError(
                f"unknown CAM normalization {self.normalization!r}; use one of {', '.join(NORMALIZATIONS)}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise FeatkitError(
                f"CAM threshold {self.threshold} is outside [0, 1]; give a fraction of the map's maximum"
            )
        if self.upsample not in UPSAMPLE_MODES:
            raise FeatkitError(
                f"unknown upsampling mode {self.upsample!r}; use one of {', '.join(UPSAMPLE_MODES)}"
            )
        try:
            scales = tuple(float(s) for s in self.scales)
        except (TypeError, ValueError):
            raise FeatkitError(f"scales must be numbers such as (1.0, 1.5, 2.0), got {self.scales!r}") from None
        if not scales or any(not np.isfinite(s) or s <= 0 for s in scales):
            raise FeatkitError(f"scales must be positive numbers such as (1.0, 1.5, 2.0), got {self.scales!r}")
        if len(scales) > MAX_SCALES or max(scales) > MAX_SCALE:
            raise FeatkitError(f"scales must be at most {MAX_SCALES} numbers of at most {MAX_SCALE:g} (the input "
                               f"grows with the square of a scale), got {self.scales!r}")
        object.__setattr__(self, "scales", scales)  # a list or ints given: one canonical tuple of floats
        if isinstance(self.close, bool) or not isinstance(self.close, (int, np.integer)) or self.close < 0:
            raise FeatkitError(f"close={self.close!r} is not a size in pixels; give a whole number >= 0 (0: no closing)")
        if self.close > MAX_CLOSE:
            raise FeatkitError(f"close={self.close} is over {MAX_CLOSE} pixels (a gap that wide is no gap inside one "
                               "object); give a smaller closing square")
        if not np.isfinite(self.enhance) or self.enhance < 0:
            raise FeatkitError(f"enhance={self.enhance!r} is not a step size; give a number >= 0 (0: no enhancement)")
        if self.enhance > 0 and self.method != "dgl":
            raise FeatkitError(f"enhance={self.enhance!r} applies to method='dgl' only (gradients of the class "
                               f"loss), not to method={self.method!r}; use method='dgl' or enhance=0")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON/TOML output files."""
        return {**asdict(self), "scales": list(self.scales)}

    @property
    def multi_scale(self) -> bool:
        """Whether maps come from other input sizes than the file's (then they are recomputed from the images)."""
        return self.scales != (1.0,)

    def cam_weight(self, weight: np.ndarray) -> np.ndarray:
        """The class weights the CAM uses (scores always use every weight)."""
        return np.maximum(weight, 0.0) if self.weights == "positive" else weight


def _as_float_tensor(x: np.ndarray | torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """float32 tensor view of ``x`` (on ``like``'s device when given)."""
    if isinstance(x, torch.Tensor):
        tensor = x
    else:
        array = np.asarray(x)
        # FeatureFile hands out read-only arrays; torch cannot wrap those without a warning, so copy them
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    device = like.device if like is not None else tensor.device
    return tensor.to(device=device, dtype=torch.float32)


def _like_input(result: torch.Tensor, original: object) -> Any:
    """Hand back numpy if the caller gave numpy, else the tensor as is."""
    if isinstance(original, torch.Tensor):
        return result
    return result.detach().cpu().numpy()


def _check_maps_and_weight(maps: torch.Tensor, weight: torch.Tensor) -> None:
    if maps.ndim != 4:
        raise FeatkitError(
            f"feature maps must be (N, K, h, w), got shape {tuple(maps.shape)}; add the batch axis with maps[None]"
        )
    if weight.ndim != 2:
        raise FeatkitError(
            f"classifier weight must be (C, K), got shape {tuple(weight.shape)}; pass the linear layer's weight matrix"
        )
    if weight.shape[1] != maps.shape[1]:
        raise FeatkitError(
            f"feature maps have K={maps.shape[1]} channels but the weight has {weight.shape[1]} columns; "
            "use the weight of the linear layer that reads these maps"
        )


def class_activation_maps(
    maps: Array,
    weight: np.ndarray | torch.Tensor,
    classes: np.ndarray | torch.Tensor | int | None = None,
    bias: np.ndarray | torch.Tensor | None = None,
) -> Array:
    """CAMs ``M_c = sum_k w_k^c f_k`` for a batch, as float32.

    ``maps`` is (N, K, h, w), ``weight`` (C, K). ``classes`` picks which maps
    to build, so a 1000-class model need not materialise all of them:

    * ``None``: every class, result (N, C, h, w);
    * an int: that class for every image, result (N, 1, h, w);
    * an int array (N,): one class per image (the true or the top-1 class),
      result (N, 1, h, w);
    * an int array (N, T): T classes per image (e.g. top-5), result (N, T, h, w).

    The paper's CAM has no bias, and that is the default: the spatial mean of
    the CAM plus ``b_c`` is then exactly the class score of a mean-pooling
    network (see :func:`scores_from_maps`). Passing ``bias`` adds ``b_c/(h*w)``
    to every cell, so the CAM *sums* to the score of the paper's sum-pooling
    formulation; the constant shifts max-relative thresholds, so boxes differ.
    """
    maps_t = _as_float_tensor(maps)
    weight_t = _as_float_tensor(weight, like=maps_t)
    _check_maps_and_weight(maps_t, weight_t)
    n_images, _, height, width = maps_t.shape
    n_classes = weight_t.shape[0]

    if classes is None:
        cams = torch.einsum("nkhw,ck->nchw", maps_t, weight_t)
        class_index = torch.arange(n_classes, device=maps_t.device).expand(n_images, n_classes)
    else:
        class_index = torch.as_tensor(np.asarray(classes) if not isinstance(classes, torch.Tensor) else classes)
        class_index = class_index.to(device=maps_t.device, dtype=torch.long)
        if class_index.ndim == 0:
            class_index = class_index.expand(n_images)
        if class_index.ndim == 1:
            class_index = class_index[:, None]
        if class_index.ndim != 2 or class_index.shape[0] != n_images:
            raise FeatkitError(
                f"classes must be an int, (N,) or (N, T) with N={n_images}, got shape {tuple(class_index.shape)}; "
                "give one row of class indices per image"
            )
        if class_index.numel() and (int(class_index.min()) < 0 or int(class_index.max()) >= n_classes):
            raise FeatkitError(
                f"class indices must lie in [0, {n_classes}), got {int(class_index.min())}..{int(class_index.max())}; "
                "use indices into the classifier's rows"
            )

        # (N, T, K): each image's own weight rows, then one batched contraction.
        cams = torch.einsum("nkhw,ntk->nthw", maps_t, weight_t[class_index])
    if bias is not None:
        bias_t = _as_float_tensor(bias, like=maps_t).reshape(-1)
        if bias_t.shape[0] != n_classes:
            raise FeatkitError(
                f"bias has {bias_t.shape[0]} entries but the weight has {n_classes} rows; pass the same layer's bias"
            )
        cams = cams + (bias_t[class_index] / (height * width))[:, :, None, None]
    return _like_input(cams, maps)


def scores_from_maps(
    maps: Array,
    weight: np.ndarray | torch.Tensor,
    bias: np.ndarray | torch.Tensor | None = None,
) -> Array:
    """Class scores (N, C) of a GAP + linear head, to check CAMs against the logits."""
    maps_t = _as_float_tensor(maps)
    weight_t = _as_float_tensor(weight, like=maps_t)
    _check_maps_and_weight(maps_t, weight_t)
    scores = maps_t.mean(dim=(2, 3)) @ weight_t.T
    if bias is not None:
        scores = scores + _as_float_tensor(bias, like=maps_t).reshape(1, -1)
    return _like_input(scores, maps)


def upsample(cam: Array, size: tuple[int, int], mode: str = "bilinear") -> Array:
    """Resize CAMs to the ORIGINAL image, ``size = (width, height)`` as PIL gives it.

    Accepts (h, w) or any (..., h, w) stack and returns (..., height, width)
    float32. Bilinear uses ``align_corners=False``: cell centres sit at
    ``(i + 0.5) * stride``, matching how a convolutional grid covers the image.
    """
    if mode not in UPSAMPLE_MODES:
        raise FeatkitError(f"unknown upsampling mode {mode!r}; use one of {', '.join(UPSAMPLE_MODES)}")
    if len(size) != 2 or min(int(size[0]), int(size[1])) < 1:
        raise FeatkitError(f"size must be (width, height) with positive sides, got {size!r}")
    cam_t = _as_float_tensor(cam)
    if cam_t.ndim < 2:
        raise FeatkitError(f"a CAM must be at least 2-D (h, w), got shape {tuple(cam_t.shape)}")
    width, height = int(size[0]), int(size[1])
    leading = cam_t.shape[:-2]
    flat = cam_t.reshape(-1, 1, *cam_t.shape[-2:])
    if mode == "bilinear":
        resized = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    else:
        resized = F.interpolate(flat, size=(height, width), mode="nearest")
    return _like_input(resized.reshape(*leading, height, width), cam)


def normalize_cam(cam: Array, mode: str = "max") -> Array:
    """Scale each map (over its last two axes) so one threshold fits all images.

    * ``"max"``: ``cam / max`` (the paper; negatives stay negative, so
      thresholding at 0.2 equals thresholding the raw map at 0.2 * max);
    * ``"minmax"``: ``(cam - min) / (max - min)`` into [0, 1] (Choe et al.);
    * ``"relu-max"``: ``max(cam, 0) / max`` into [0, 1].

    Maps with nothing to scale (constant maps; for the max modes, maps whose
    maximum is <= 0, i.e. no positive evidence) become all zeros, never NaN.
    """
    if mode not in NORMALIZATIONS:
        raise FeatkitError(f"unknown CAM normalization {mode!r}; use one of {', '.join(NORMALIZATIONS)}")
    cam_t = _as_float_tensor(cam)
    if cam_t.ndim < 2:
        raise FeatkitError(f"a CAM must be at least 2-D (h, w), got shape {tuple(cam_t.shape)}")
    peak = cam_t.amax(dim=(-2, -1), keepdim=True)
    if mode == "minmax":
        low = cam_t.amin(dim=(-2, -1), keepdim=True)
        spread = peak - low
        valid = spread > 0
        result = torch.where(valid, (cam_t - low) / torch.where(valid, spread, 1.0), 0.0)
    else:
        source = cam_t.clamp(min=0) if mode == "relu-max" else cam_t
        valid = peak > 0
        result = torch.where(valid, source / torch.where(valid, peak, 1.0), 0.0)
    return _like_input(result, cam)
