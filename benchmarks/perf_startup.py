"""Start time of the ``featkit`` command: each light verb as a ratio to ``python -c "import numpy"``.

A user waits for ``featkit --help`` or ``featkit info`` before anything is
computed, so these verbs import neither torch nor torchvision (``models``
still builds the backbone registry, which does). Each command runs as a fresh
process, ``--repeats`` times; the table gives the median wall time, the ratio
to the median of ``python -c "import numpy"`` measured in the same run, and
whether torch was imported (read from ``python -X importtime``).

Usage::

    python -m benchmarks.perf_startup                      # writes benchmarks/results/perf_startup.md/.csv
    python -m benchmarks.perf_startup --info features.h5   # also times featkit info on that file
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.tables import write_table

VERBS: tuple[tuple[str, ...], ...] = (("--help",), ("--version",), ("datasets",), ("models",))


def _run(argv: Sequence[str]) -> float:
    """Wall seconds of one fresh ``python argv`` process (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return elapsed


def imports_torch(argv: Sequence[str]) -> bool:
    """Whether ``python argv`` imports torch (``-X importtime`` lists every module a process imports)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True)
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in done.stderr.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command; the median is reported (default 5)")
    parser.add_argument("--info", type=Path, default=None, help="a features.h5 to time `featkit info` on")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    baseline_argv = ["-c", "import numpy"]
    commands = [("python -c 'import numpy'", baseline_argv)]
    verbs = list(VERBS) + ([("info", str(args.info))] if args.info else [])
    commands += [(f"featkit {' '.join(v if not v.endswith('.h5') else Path(v).name for v in verb)}",
                  ["-m", "featkit", *verb]) for verb in verbs]
    medians = {label: statistics.median(_run(cmd) for _ in range(args.repeats)) for label, cmd in commands}
    base = medians[commands[0][0]]
    rows = [("command", "median s", "ratio to import numpy", "imports torch")]
    for label, cmd in commands:
        rows.append((label, f"{medians[label]:.3f}", f"{medians[label] / base:.2f}", "yes" if imports_torch(cmd) else "no"))
    note = (f"Median of {args.repeats} fresh processes each ({sys.executable}, Python "
            f"{sys.version.split()[0]}); ratio = median / median of `python -c 'import numpy'` in the same run. "
            "`models` builds the backbone registry (torch, torchvision); the other verbs import neither.")
    print(write_table(rows, args.out, "perf_startup", note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
