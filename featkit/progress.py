"""Progress of the long library calls (``featkit.extract``, ``featkit.localize``) for Python users.

The calls take ``progress``: True (default) draws a ``tqdm.auto`` bar (a
widget in a notebook, text on a terminal; nothing when stderr is redirected
and no notebook runs), False or None is silent, and a
function ``progress(done, total)`` is called instead (the CLI passes its own
bars and log lines that way).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[[int, int], None]
"""``progress(done, total)``: called as work is committed (and once at the start)."""


def interactive() -> bool:
    """Whether someone watches: stderr is a terminal, or this runs in a Jupyter kernel (a notebook)."""
    if sys.stderr is not None and sys.stderr.isatty():
        return True
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    app = get() if get is not None else None
    return app is not None and "IPKernelApp" in getattr(app, "config", {})


def progress_callback(progress: Progress | bool | None, desc: str, unit: str = "img") -> Progress | None:
    """The callback for ``progress``: the caller's own, a tqdm.auto bar that closes itself when done (True,
    when someone watches: :func:`interactive`; a script's redirected log stays clean), or None."""
    if progress is None or progress is False or (progress is True and not interactive()):
        return None
    if progress is not True:
        return progress
    from tqdm.auto import tqdm

    bars: list[tqdm] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, initial=done, desc=desc, unit=unit, dynamic_ncols=True))
        bar = bars[0]
        bar.update(done - bar.n)
        if done >= total and not bar.disable:
            bar.close()

    return update
