"""``tiny_test``: a registered three-conv backbone with seeded random weights, for fast logic tests.

It has everything a real backbone has (a GAP head, provenance, a sha256 of its
weights) and runs a 64 px image in well under a millisecond, so tests of
resume, merge, error paths, units or crops need no real weights. Its features
mean nothing: never report numbers made with it.
"""

from __future__ import annotations

import torch
from torch import nn

from featkit.models.custom import state_digest
from featkit.models.registry import Backbone, BackboneSpec, WeightsInfo, register_backbone
from featkit.models.weights import load_into, read_state_dict

TINY_NAME = "tiny_test"
TINY_SEED = 0
TINY_CLASSES = 10


def _tiny_body() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
    )


def _seeded(seed: int) -> tuple[nn.Sequential, nn.Linear]:
    """The same parameters on every machine: drawn from a private generator, not the global RNG."""
    body, head = _tiny_body(), nn.Linear(32, TINY_CLASSES)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in [*body.parameters(), *head.parameters()]:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return body, head


def _build(weights: str | None) -> tuple[Backbone, WeightsInfo]:
    body, head = _seeded(TINY_SEED)
    if weights in (None, "random", f"seeded:{TINY_SEED}"):
        info = WeightsInfo(f"seeded:{TINY_SEED}", state_digest(body, head))
    else:
        state, info = read_state_dict(weights)
        holder = nn.ModuleDict({"body": body, "head": head})
        load_into(holder, state, weights)
    return Backbone(body, head), info


register_backbone(
    BackboneSpec(
        name=TINY_NAME,
        channels=32,
        stride=8,
        input_size=64,
        feature_layer="conv3 (3x3, stride 2, ReLU)",
        weights_source=f"seeded random (seed {TINY_SEED}); for tests only",
        build=_build,
        default_weights_available=lambda: True,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        head=f"random-{TINY_CLASSES}",
        listed=False,
    )
)
