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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from featkit.errors import FeatkitError
from featkit.features.extractor import backbone_from_provenance, preprocessed_batches
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


def gradient_maps(
    model: Backbone, images: torch.Tensor, weight: np.ndarray, classes: np.ndarray, layers: Sequence[str] = (LAST,)
) -> np.ndarray:
    """DGL pixel-level maps (n, T, h, w) of ``classes`` (n, T) on ``images``, one per layer, fused.

    Several ``layers`` are fused: each map clipped at 0, divided by its
    maximum, resized to the finest layer's grid and averaged. One layer
    gives its raw map (the CAM up to ``1/(h w)`` at ``last``).
    """
    index = np.asarray(classes, dtype=np.int64)
    if index.ndim == 1:
        index = index[:, None]
    w = torch.as_tensor(np.asarray(weight, dtype=np.float32), device=images.device)
    captured: dict[str, torch.Tensor] = {}
    hooks = []

    def keeper(name: str) -> Callable[[torch.nn.Module, object, torch.Tensor], torch.Tensor]:
        def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
            leaf = output.detach().requires_grad_(True)
            captured[name] = leaf
            return leaf

        return hook

    for name in layers:
        if name != LAST:
            hooks.append(_find_layer(model, name).register_forward_hook(keeper(name)))
    try:
        with torch.enable_grad():
            final = model.forward_features(images)
            if LAST in layers:
                if not final.requires_grad:  # no inner layer hooked: the maps are the graph's only leaf
                    final = final.detach().requires_grad_(True)
                captured[LAST] = final
            scores = final.float().mean(dim=(2, 3)) @ w.T  # (n, C) raw linear scores
            picked = torch.gather(scores, 1, torch.as_tensor(index, device=scores.device))  # (n, T)
            acts = [captured[name] for name in layers]
            per_layer: list[list[torch.Tensor]] = [[] for _ in layers]
            for t in range(index.shape[1]):
                grads = torch.autograd.grad(picked[:, t].sum(), acts, retain_graph=t + 1 < index.shape[1])
                for j, (a, g) in enumerate(zip(acts, grads)):
                    per_layer[j].append((g.float() * a.float()).sum(dim=1).detach())
    finally:
        for handle in hooks:
            handle.remove()
    stacks = [torch.stack(maps, dim=1) for maps in per_layer]  # each (n, T, h_l, w_l)
    if len(stacks) == 1:
        return stacks[0].cpu().numpy()
    height = max(s.shape[-2] for s in stacks)
    width = max(s.shape[-1] for s in stacks)
    fused = torch.zeros(stacks[0].shape[0], index.shape[1], height, width, device=stacks[0].device)
    for stack in stacks:
        clipped = stack.clamp(min=0)
        peak = clipped.amax(dim=(-2, -1), keepdim=True)
        clipped = torch.where(peak > 0, clipped / torch.where(peak > 0, peak, 1.0), 0.0)
        fused += F.interpolate(clipped, size=(height, width), mode="bilinear", align_corners=False)
    return (fused / len(stacks)).cpu().numpy()


def image_gradient_maps(
    features: FeatureFile,
    root: str | Path,
    rows: np.ndarray,
    weight: np.ndarray,
    classes: np.ndarray,
    layers: Sequence[str] = (LAST,),
    device: str = "auto",
    batch: int = 16,
) -> np.ndarray:
    """:func:`gradient_maps` of a features file's ``rows``: the backbone of its provenance on its images."""
    _, model, dev = backbone_from_provenance(features.attrs, device)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    paths = features.paths
    index = np.asarray(classes, dtype=np.int64).reshape(len(rows), -1)
    out = []
    for lo, x in zip(range(0, len(rows), batch),
                     preprocessed_batches(features.attrs, root, [paths[int(r)] for r in rows], batch, dev)):
        out.append(gradient_maps(model, x.contiguous(), weight, index[lo : lo + batch], layers))
    if not out:
        raise FeatkitError("no rows to compute gradient maps of; pass at least one row")
    return np.concatenate(out)
