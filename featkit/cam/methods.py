"""Named localization maps: conv maps (n, K, h, w) + class weights -> one map per asked class (n, T, h, w).

:class:`~featkit.cam.boxer.CamBoxer` asks this registry for the map named by
``CamOptions.method`` and boxes it exactly like the paper's CAM, so every
method shares the one maps -> map -> upsample -> box path.

Why more than the paper's CAM: one-vs-all SVMs trained against *other
classes of the same kind* (other birds) give negative weight to the
evidence all classes share, and that evidence lies on the object too. The
CAM of all weights is then a weak, part-focused signal whose boxes are too
small (issue 10: 42.8 % GT-known on the CUB sample against 59.7 % for a
centred box). Keeping only positive weights, or asking the class-agnostic
mean of all maps where the object is, restores the extent.

When the train split has boxes, the learned methods (:data:`LEARNED_METHODS`)
go further: a linear SVM on map cells, inside versus outside the training
boxes (:mod:`featkit.cam.foreground`), says where objects are; it is itself a
CAM with weights learned for "object against its own background".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from featkit.cam.foreground import ForegroundModel
from featkit.cam.maps import MAP_METHODS, class_activation_maps
from featkit.errors import FeatkitError

MapMethod = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(maps (n, K, h, w), class weights (C, K), classes (n, T)) -> maps (n, T, h, w) float32."""


def _cam(maps: np.ndarray, weight: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The paper's CAM, ``sum_k w_k^c f_k`` with the weights given."""
    return np.asarray(class_activation_maps(maps, weight, classes))


def _cam_positive(maps: np.ndarray, weight: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """CAM of the positive weights only: the evidence FOR the class, without the shared evidence taken away."""
    return _cam(maps, np.maximum(weight, 0.0), classes)


def objectness(maps: np.ndarray) -> np.ndarray:
    """Class-agnostic map (n, h, w): the unweighted mean of all K maps (where the backbone sees "something")."""
    return np.asarray(maps, dtype=np.float32).mean(axis=1)


def _objectness(maps: np.ndarray, weight: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The same class-agnostic map for every asked class."""
    agnostic = objectness(maps)[:, None]
    return np.ascontiguousarray(np.broadcast_to(agnostic, (agnostic.shape[0], classes.shape[1], *agnostic.shape[2:])))


def _unit_peak(stack: np.ndarray) -> np.ndarray:
    """Each (h, w) map clipped at 0 and divided by its maximum (all-zero maps stay zero)."""
    clipped = np.maximum(stack, 0.0)
    peak = clipped.max(axis=(-2, -1), keepdims=True)
    return np.divide(clipped, peak, out=np.zeros_like(clipped), where=peak > 0)


def _cam_objectness(maps: np.ndarray, weight: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Positive-weight CAM gated by the class-agnostic map: both peak-normalised, multiplied.

    The class evidence says WHICH object, the mean map says how far it
    extends; the product keeps a region only where both agree, so the
    class-specific map inherits the agnostic map's extent without lighting up
    other objects the class weights ignore.
    """
    evidence = _unit_peak(_cam_positive(maps, weight, classes))
    extent = _unit_peak(objectness(maps))[:, None]
    return (evidence * extent).astype(np.float32)


def _cam_objectness_mean(maps: np.ndarray, weight: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Average of the peak-normalised positive-weight CAM and class-agnostic map (a softer gate)."""
    evidence = _unit_peak(_cam_positive(maps, weight, classes))
    extent = _unit_peak(objectness(maps))[:, None]
    return (0.5 * (evidence + extent)).astype(np.float32)


def _cam_foreground(maps: np.ndarray, weight: np.ndarray, classes: np.ndarray, model: ForegroundModel) -> np.ndarray:
    """Positive-weight CAM gated by the learned foreground map: which object (class evidence) x where objects are."""
    evidence = _unit_peak(_cam_positive(maps, weight, classes))
    return (evidence * _unit_peak(model.maps(maps, np.zeros_like(classes)))).astype(np.float32)


LearnedMethod = Callable[[np.ndarray, np.ndarray, np.ndarray, ForegroundModel], np.ndarray]
"""As :data:`MapMethod`, plus the foreground model fitted on the training boxes (featkit.cam.foreground)."""

LEARNED_METHODS: dict[str, tuple[bool, LearnedMethod]] = {
    "foreground": (False, lambda maps, weight, classes, model: model.maps(maps, classes)),
    "foreground-class": (True, lambda maps, weight, classes, model: model.maps(maps, classes)),
    "cam-foreground": (False, _cam_foreground),
}
"""Methods whose map is learned from the TRAIN split's boxes, by name: (one model per class?, map function)."""

METHODS: dict[str, MapMethod] = {
    "cam": _cam,
    "cam-positive": _cam_positive,
    "objectness": _objectness,
    "cam-objectness": _cam_objectness,
    "cam-objectness-mean": _cam_objectness_mean,
}
"""Map methods that work on stored maps (no backbone needed), by name."""

GRADIENT_METHODS: tuple[str, ...] = ("dgl",)
"""Methods that run the backbone again on the images (gradients on ``CamOptions.layer``): see featkit.cam.dgl."""

CLASS_AGNOSTIC: frozenset[str] = frozenset({"objectness", "foreground"})
"""Methods whose map ignores the class (GT-known and top-1 boxes are the same box)."""


if set(METHODS) | set(LEARNED_METHODS) | set(GRADIENT_METHODS) != set(MAP_METHODS):  # one list of names, checked at import
    raise RuntimeError("featkit.cam.maps.MAP_METHODS and the implemented methods differ")


def method_names() -> tuple[str, ...]:
    return MAP_METHODS


def check_method(name: str) -> None:
    if name not in MAP_METHODS:
        raise FeatkitError(f"unknown localization method {name!r}; use one of {', '.join(MAP_METHODS)}")


def method_maps(
    name: str, maps: np.ndarray, weight: np.ndarray, classes: np.ndarray | int,
    foreground: ForegroundModel | None = None,
) -> np.ndarray:
    """Maps (n, T, h, w) of method ``name`` for ``classes`` ((n,), (n, T) or one int) on maps (n, K, h, w).

    Learned methods (:data:`LEARNED_METHODS`) need ``foreground``, fitted on the training boxes.
    """
    check_method(name)
    if name in GRADIENT_METHODS:
        raise FeatkitError(f"method {name!r} needs the images, not stored maps; use CamBoxer.row_cams")
    index = np.asarray(classes, dtype=np.int64)
    n = np.shape(maps)[0]
    if index.ndim == 0:
        index = np.full((n, 1), int(index), dtype=np.int64)
    elif index.ndim == 1:
        index = index[:, None]
    if name == "cam":
        return _cam(maps, weight, index)
    if name in LEARNED_METHODS:
        per_class, learned = LEARNED_METHODS[name]
        if foreground is None or foreground.per_class != per_class:
            raise FeatkitError(f"method {name!r} learns where objects are from the training images' boxes; fit "
                               f"its model first (featkit.cam.calibrate on train rows fits it)")
        return learned(np.asarray(maps, dtype=np.float32), np.asarray(weight, dtype=np.float32), index, foreground)
    return METHODS[name](np.asarray(maps, dtype=np.float32), np.asarray(weight, dtype=np.float32), index)
