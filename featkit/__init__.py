"""featkit: deep GAP features, one-vs-all linear SVMs and class activation maps.

Reproduces and extends Sec. 4 of Zhou et al., "Learning Deep Features for
Discriminative Localization" (CVPR 2016).
"""

from importlib.metadata import PackageNotFoundError, version

from featkit.errors import FeatkitError

try:
    __version__ = version("featkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

__all__ = ["FeatkitError", "__version__"]
