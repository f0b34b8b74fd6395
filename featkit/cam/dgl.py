"""Gradient maps on any layer: the pixel-level selection of Dual-Gradients Localization (Tan et al.).

For a layer with activations ``A_k(x, y)`` and a class score ``S_c`` (the
linear score ``w^c . GAP(f)`` of the SVM weights or the head on the last conv
maps ``f``), the map is ``M_c(x, y) = sum_k dS_c/dA_k(x, y) * A_k(x, y)``:
every activation weighted by its own gradient, so it works on any
convolutional layer, not only the last. At the last conv maps the gradient
is ``w_k^c / (h w)`` everywhere and ``M_c`` is the CAM divided by ``h w``:
the paper's CAM is the special case (tests check it).

The score is the raw linear score ``w^c . F`` even for SVMs trained on
L2-normalised features: per image that normalisation divides every class
score by the same positive ``||F||``, so it changes neither the ranking nor
where the evidence lies, and keeps the last-layer case exactly the CAM.

DGL's second branch, the class-aware enhanced map (``enhance`` > 0), moves
the activations one step down the gradient of the classification loss of
the target class and selects pixels again on the moved activations; both
branches are fused. Multi-scale inputs (:func:`image_maps`) serve every
method that recomputes from the images: dgl, and the stored-maps methods
when ``CamOptions.scales`` asks for other input sizes than the file's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from featkit.cam.foreground import ForegroundModel
from featkit.cam.methods import method_maps
from featkit.cam.placement import pad_to_canvas
from featkit.errors import FeatkitError
from featkit.features.replay import Replay
from featkit.features.store import FeatureFile
from featkit.models.registry import Backbone

LAST = "last"
"""Layer name of the last conv maps (the ones the CAM and the stored features use)."""


def layer_names(model: Backbone) -> list[str]:
    """Names ``--layer`` accepts: ``last`` and every named module of the backbone body."""
    return [LAST] + [name for name, _ in model.body.named_modules() if name]


def _find_layer(model: Backbone, name: str) -> torch.nn.Module:
    modules = dict(model.body.named_modules())
    if name not in modules or not name:
        names = layer_names(model)
        shown = ", ".join(names[:4] + ["…"] + names[-3:]) if len(names) > 8 else ", ".join(names)
        raise FeatkitError(f"the backbone has no layer {name!r}; use one of {shown} (module names of its body)")
    return modules[name]


def _unit_peak(stack: torch.Tensor) -> torch.Tensor:
    """Each (h, w) map clipped at 0 and divided by its maximum (all-zero maps stay zero)."""
    clipped = stack.clamp(min=0)
    peak = clipped.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, clipped / torch.where(peak > 0, peak, 1.0), 0.0)


def _fuse(stacks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Peak-normalised maps (n, T, h_l, w_l) resized to the finest grid and averaged: DGL's fusion."""
    height = max(s.shape[-2] for s in stacks)
    width = max(s.shape[-1] for s in stacks)
    fused = torch.zeros(stacks[0].shape[0], stacks[0].shape[1], height, width, device=stacks[0].device)
    for stack in stacks:
        fused += F.interpolate(_unit_peak(stack), size=(height, width), mode="bilinear", align_corners=False)
    return fused / len(stacks)


def enhance_step(acts: torch.Tensor, loss_grad: torch.Tensor, eta: float) -> torch.Tensor:
    """DGL's class-aware enhancement ``A' = A - eta * (||A|| / ||dL/dA||) * dL/dA``, per image.

    One step down the gradient of the target's loss raises the target's
    evidence. The gradient is rescaled to the activations' L2 norm (over all
    of one image's activations at the layer) so that ``eta`` is the step's
    size relative to the activations: a raw gradient's size differs by orders
    of magnitude between layers and backbones (at the last layer it is
    ``(p - y) w / (h w)``), one ``eta`` could not serve them all. The
    direction is the paper's. A zero gradient leaves ``A`` as it is.
    """
    a_norm = acts.flatten(1).norm(dim=1)
    g_norm = loss_grad.flatten(1).norm(dim=1)
    factor = torch.where(g_norm > 0, a_norm / torch.where(g_norm > 0, g_norm, 1.0), 0.0)
    return acts - eta * factor.view(-1, *([1] * (acts.ndim - 1))) * loss_grad


def class_loss(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The enhancement's loss: cross-entropy of the target over the softmax of the C linear scores, summed.

    Cross-entropy, not the SVM's hinge, also for SVM scores: the one-vs-all
    hinge of the target is flat (zero gradient) once its score passes the
    margin, which is the case for most correctly classified images, while
    cross-entropy always pushes the target up against the other classes.
    """
    return F.cross_entropy(scores, target, reduction="sum")


def _linear_scores(final: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return final.float().mean(dim=(2, 3)) @ w.T  # (n, C) raw linear scores


def _selection_on(
    model: Backbone, images: torch.Tensor, w: torch.Tensor, target: torch.Tensor, name: str, acts: torch.Tensor
) -> torch.Tensor:
    """Pixel-level map (n, h, w) of ``target`` (n,) with layer ``name``'s activations replaced by ``acts``."""
    leaf = acts.detach().requires_grad_(True)
    if name == LAST:
        final = leaf
    else:
        handle = _find_layer(model, name).register_forward_hook(lambda module, inputs, output: leaf)
        try:
            final = model.forward_features(images)
        finally:
            handle.remove()
    picked = torch.gather(_linear_scores(final, w), 1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(picked, leaf)
    return (grad.float() * leaf.float()).sum(dim=1).detach()


def gradient_maps(
    model: Backbone, images: torch.Tensor, weight: np.ndarray, classes: np.ndarray, layers: Sequence[str] = (LAST,),
    enhance: float = 0.0,
) -> np.ndarray:
    """DGL pixel-level maps (n, T, h, w) of ``classes`` (n, T) on ``images``, one per layer, fused.

    Several ``layers`` are fused: each map clipped at 0, divided by its
    maximum, resized to the finest layer's grid and averaged. One layer
    gives its raw map (the CAM up to ``1/(h w)`` at ``last``).

    ``enhance`` > 0 adds DGL's class-aware branch: per layer and target
    class, the activations move by :func:`enhance_step` along the gradient
    of :func:`class_loss`, the pixel-level map is computed again on the moved
    activations (the rest of the network runs on them), and every plain and
    enhanced map is fused as above (the average of peak-normalised maps).
    At ``last`` the loss gradient of a GAP + linear head is the same in every
    cell, so the enhanced map is the CAM plus a constant there: the branch
    only reshapes the map on inner layers, where the gradient varies in space.
    """
    index = np.asarray(classes, dtype=np.int64)
    if index.ndim == 1:
        index = index[:, None]
    w = torch.as_tensor(np.asarray(weight, dtype=np.float32), device=images.device)
    targets = torch.as_tensor(index, device=images.device)
    captured: dict[str, torch.Tensor] = {}
    hooks = []

    def keeper(name: str) -> Callable[[torch.nn.Module, object, torch.Tensor], torch.Tensor]:
        def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
            leaf = output.detach().requires_grad_(True)
            captured[name] = leaf
            return leaf

        return hook

    per_layer: list[list[torch.Tensor]] = [[] for _ in layers]
    enhanced: list[list[torch.Tensor]] = [[] for _ in layers]
    with torch.enable_grad():
        for name in layers:
            if name != LAST:
                hooks.append(_find_layer(model, name).register_forward_hook(keeper(name)))
        try:
            final = model.forward_features(images)
        finally:  # only this forward detaches the asked layers; the enhanced passes replace one layer each
            for handle in hooks:
                handle.remove()
        if LAST in layers:
            if not final.requires_grad:  # no inner layer hooked: the maps are the graph's only leaf
                final = final.detach().requires_grad_(True)
            captured[LAST] = final
        scores = _linear_scores(final, w)
        picked = torch.gather(scores, 1, targets)  # (n, T)
        acts = [captured[name] for name in layers]
        for t in range(index.shape[1]):
            last_pass = t + 1 == index.shape[1]
            grads = torch.autograd.grad(picked[:, t].sum(), acts, retain_graph=enhance > 0 or not last_pass)
            for j, (a, g) in enumerate(zip(acts, grads)):
                per_layer[j].append((g.float() * a.float()).sum(dim=1).detach())
            if enhance > 0:
                loss_grads = torch.autograd.grad(class_loss(scores, targets[:, t]), acts, retain_graph=not last_pass)
                for j, name in enumerate(layers):
                    moved = enhance_step(acts[j].detach(), loss_grads[j], enhance)
                    enhanced[j].append(_selection_on(model, images, w, targets[:, t], name, moved))
    stacks = [torch.stack(maps, dim=1) for maps in per_layer]  # each (n, T, h_l, w_l)
    if enhance > 0:
        return _fuse(stacks + [torch.stack(maps, dim=1) for maps in enhanced]).cpu().numpy()
    if len(stacks) == 1:
        return stacks[0].cpu().numpy()
    return _fuse(stacks).cpu().numpy()


MapCompute = Callable[[Backbone, torch.Tensor, np.ndarray], np.ndarray]
"""(backbone, input batch (n, 3, s, s), classes (n, T)) -> maps (n, T, h, w) of one input size."""


def mean_on_grid(maps: Sequence[np.ndarray], grid: tuple[int, int]) -> np.ndarray:
    """Maps (n, T, h_s, w_s) of several input sizes, each resized bilinearly to ``grid`` (h, w), averaged.

    One map already on the grid is returned as it is (a single scale-1 input changes nothing).
    """
    if len(maps) == 1 and tuple(maps[0].shape[-2:]) == tuple(grid):
        return maps[0]
    total = torch.zeros(*maps[0].shape[:2], *grid)
    for one in maps:
        tensor = torch.from_numpy(np.array(one, dtype=np.float32))  # a copy: the maps may be read-only
        if tuple(tensor.shape[-2:]) != tuple(grid):
            tensor = F.interpolate(tensor, size=grid, mode="bilinear", align_corners=False)
        total += tensor
    return (total / len(maps)).numpy()


def image_maps(
    features: FeatureFile,
    root: str | Path,
    rows: np.ndarray,
    classes: np.ndarray,
    compute: MapCompute,
    scales: Sequence[float] = (1.0,),
    device: str = "auto",
    batch: int = 16,
) -> np.ndarray:
    """Maps of a features file's ``rows`` computed by ``compute`` on its images, averaged over input ``scales``.

    The backbone of the file's provenance runs on each image under the file's
    own geometry (:class:`~featkit.features.replay.Replay`) at ``round(S * s)``
    px for every scale ``s`` (``S`` the file's input size; ``short-side``
    images keep their aspect ratio, one forward pass per input shape); with
    flip TTA the mirrored image runs too and its map, flipped back, is
    averaged in, as extraction averaged the maps. Each image's scale maps are
    resized to its scale-1 grid (the scale-1 map's grid when 1 is among the
    scales, else the first scale's grid divided by that scale) and averaged
    (:func:`mean_on_grid`). Images whose grids differ (``short-side``) come
    back top-left in a NaN-padded canvas, as stored maps do.
    """
    if len(rows) == 0:
        raise FeatkitError("no rows to compute maps of; pass at least one row")
    replay = Replay.of(features.attrs, device)
    for parameter in replay.model.parameters():
        parameter.requires_grad_(False)
    paths = [features.paths[int(r)] for r in rows]
    index = np.asarray(classes, dtype=np.int64).reshape(len(rows), -1)
    size = replay.provenance.input_size
    streams = [replay.input_groups(root, paths, batch, max(1, round(size * s))) for s in scales]
    out: list[np.ndarray] = []
    for lo, per_scale in zip(range(0, len(rows), batch), zip(*streams)):
        maps: list[list[np.ndarray]] = [[] for _ in range(min(batch, len(rows) - lo))]
        for groups in per_scale:  # one scale: its shape groups
            for positions, x in groups:
                computed = compute(replay.model, x, index[lo + positions])
                if replay.flip:
                    mirrored = compute(replay.model, x.flip(3).contiguous(), index[lo + positions])
                    computed = (computed + mirrored[..., ::-1]) / 2
                for position, one in zip(positions, computed):
                    maps[int(position)].append(one[None])
        for per_image in maps:
            if 1.0 in scales:
                grid = tuple(per_image[list(scales).index(1.0)].shape[-2:])
            else:
                h, w = per_image[0].shape[-2:]
                grid = (max(1, round(h / scales[0])), max(1, round(w / scales[0])))
            out.append(mean_on_grid(per_image, (int(grid[0]), int(grid[1])))[0])
    return pad_to_canvas(out)


def image_gradient_maps(
    features: FeatureFile,
    root: str | Path,
    rows: np.ndarray,
    weight: np.ndarray,
    classes: np.ndarray,
    layers: Sequence[str] = (LAST,),
    device: str = "auto",
    batch: int = 16,
    *,
    scales: Sequence[float] = (1.0,),
    enhance: float = 0.0,
) -> np.ndarray:
    """:func:`gradient_maps` of a features file's ``rows``: the backbone of its provenance on its images."""

    def compute(model: Backbone, x: torch.Tensor, index: np.ndarray) -> np.ndarray:
        return gradient_maps(model, x, weight, index, layers, enhance)

    return image_maps(features, root, rows, classes, compute, scales, device, batch)


def image_method_maps(
    features: FeatureFile,
    root: str | Path,
    rows: np.ndarray,
    method: str,
    weight: np.ndarray,
    classes: np.ndarray,
    device: str = "auto",
    batch: int = 16,
    *,
    scales: Sequence[float] = (1.0,),
    foreground: ForegroundModel | None = None,
) -> np.ndarray:
    """A stored-maps method's maps (:func:`~featkit.cam.methods.method_maps`) on conv maps recomputed from the
    images at every input scale (float32), averaged on the scale-1 grid; ``foreground`` for learned methods."""

    def compute(model: Backbone, x: torch.Tensor, index: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            conv = model.forward_features(x).float().cpu().numpy()
        return method_maps(method, conv, weight, index, foreground)

    return image_maps(features, root, rows, classes, compute, scales, device, batch)
