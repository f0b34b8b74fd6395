"""Getting weights: a packaged file, the torch hub cache, a download, or a local path.

Downloads never hang: a short socket timeout turns "no network" into a clear
error that says how to pass a local file instead.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch

from featkit.errors import FeatkitError
from featkit.models.registry import WeightsInfo

DOWNLOAD_TIMEOUT_S = 20.0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """A state dict from a .pth/.pt file (bare, or under 'state_dict'/'model'), or a .safetensors file."""
    file = Path(path)
    if not file.is_file():
        raise FeatkitError(f"weights file {file} does not exist; pass weights=PATH to a .pth state dict")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(file))
        else:
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except ImportError:
        raise FeatkitError(f"reading {file} needs the safetensors package: pip install safetensors") from None
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise FeatkitError(f"cannot read weights file {file} ({type(exc).__name__}); expected a torch state dict") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise FeatkitError(f"weights file {file} holds a {type(obj).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return state, WeightsInfo(identifier=str(file.resolve()), sha256=sha256_of(file))


WEIGHT_LIMIT = 1e8
"""Largest plausible |value| of a trained parameter or buffer (BatchNorm variances included), fixed a
priori: trained nets stay orders of magnitude below it, damaged or crafted files do not."""


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load with one clear line when the file is for another network, or when a value is NaN, inf
    or beyond :data:`WEIGHT_LIMIT` (such a net would extract garbage features without a word)."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            bad = ~torch.isfinite(value) | (value.abs() > WEIGHT_LIMIT)
            if bool(bad.any()):
                raise FeatkitError(f"weights {source} are damaged: {key} holds {int(bad.sum())} NaN, infinite or "
                                   f"|x| > {WEIGHT_LIMIT:g} values; use an intact weights file")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise FeatkitError(f"weights {source} do not fit this backbone ({first}); check the model and weights=PATH") from exc


def hub_cached_or_download(url: str) -> Path:
    """The torch hub checkpoint for ``url``: from the cache, else downloaded with a timeout."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except (URLError, OSError, TimeoutError) as exc:
        raise FeatkitError(
            f"cannot download {url} ({exc.__class__.__name__}: no network?); "
            f"download it elsewhere and pass weights=PATH, or copy it to {target}"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
    return target
