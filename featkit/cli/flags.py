"""Library errors speak Python keywords (``overwrite=True``); the CLI user reads flags (``--overwrite``).

The library never names a flag: its messages name the keyword arguments of the
call that failed. This module is the one place that knows how each keyword is
spelled on the command line, and rewrites a message before it is printed.
"""

from __future__ import annotations

import re

KEYWORD_FLAGS: dict[str, str] = {
    "batch_size": "--batch-size",
    "image_size": "--image-size",
    "workers": "--workers",
    "on_error": "--on-error",
    "precision": "--precision",
    "resize": "--resize",
    "tta": "--tta",
    "device": "--device",
    "world_size": "--world-size",
    "rank": "--rank",
    "weights": "--weights",
    "model": "--model",
    "maps": "--maps",
    "overwrite": "--overwrite",
    "root": "--root",
    "output": "-o",
    "fold": "--fold",
    "split": "--split",
    "boxes": "--boxes",
    "top": "--top",
    "which": "--class",
    "save_raw": "--raw",
    "normalize": "--normalize",
    "top_units": "--top-units",
    "images_per_unit": "--images",
    "limit": "--limit",
    "jobs": "--jobs",
    "n_jobs": "--jobs",
    "check": "--check",
    "threshold": "--threshold",
    "normalization": "--normalization",
    "cam_weights": "--cam-weights",
    "calibrate": "--calibrate",
    "method": "--method",
    "layer": "--layer",
    "close": "--close",
    "scales": "--scales",
    "enhance": "--enhance",
    "C": "--C",
    "name": "--name",
    "mean": "--mean",
    "mean_file": "--mean-file",
    "protocol": "--protocol",
    "cam_curve_interval": "--cam-curve-interval",
    "moved_root": "--moved-root",
    "holdout": "--holdout",
    "folds": "--folds",
    "dataset": "--dataset",
    "exif_transpose": "--exif-transpose",
}

_ASSIGNED = re.compile(r"\b(" + "|".join(map(re.escape, KEYWORD_FLAGS)) + r")=(True\b|'([^']*)'|\"([^\"]*)\"|)")
_BARE = re.compile(r"(?<![\w.-])(" + "|".join(k for k in KEYWORD_FLAGS if "_" in k) + r")\b(?!=)")


def to_flags(message: str) -> str:
    """``overwrite=True`` -> ``--overwrite``, ``on_error='skip'`` -> ``--on-error skip``, ``root=DIR`` ->
    ``--root DIR``, and a bare ``batch_size`` -> ``--batch-size``."""

    def assigned(match: re.Match[str]) -> str:
        flag = KEYWORD_FLAGS[match.group(1)]
        value = match.group(2)
        if value == "True":
            return flag
        quoted = match.group(3) if match.group(3) is not None else match.group(4)
        return f"{flag} {quoted}" if quoted is not None else f"{flag} "

    message = _ASSIGNED.sub(assigned, message)
    return _BARE.sub(lambda m: KEYWORD_FLAGS[m.group(1)], message)
