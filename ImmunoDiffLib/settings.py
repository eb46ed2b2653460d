"""The settings a user can make through the environment, and the folders they point to.

* ``IMMUNODIFF_CACHE``: the project's cache (default ``$XDG_CACHE_HOME/immunodiff``, else
  ``~/.cache/immunodiff``): sample CTs, anatomy results, preprocessed crops, the quick bundle;
* ``IMMUNODIFF_SAMPLE_DATA``: folders (``os.pathsep``-separated) already holding the sample
  CTs, used instead of downloading them;
* ``IMMUNODIFF_BUNDLE``: the model bundle used when none is given (default: the demo bundle
  shipped in ``Resources/demo_bundle``);
* ``IMMUNODIFF_LUNGMASK_WEIGHTS``: a folder holding lungmask's two weight files.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "IMMUNODIFF_CACHE"
SAMPLE_DATA_ENV = "IMMUNODIFF_SAMPLE_DATA"
DEFAULT_BUNDLE_ENV = "IMMUNODIFF_BUNDLE"
LUNGMASK_WEIGHTS_ENV = "IMMUNODIFF_LUNGMASK_WEIGHTS"


def cache_dir() -> Path:
    """The user cache of the project (``IMMUNODIFF_CACHE``, else ~/.cache/immunodiff)."""
    base = os.environ.get(CACHE_ENV) or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    ) / "immunodiff"
    return Path(base)


def default_bundle() -> Path | None:
    """``IMMUNODIFF_BUNDLE``, else the demo bundle shipped in Resources/ (if present)."""
    if os.environ.get(DEFAULT_BUNDLE_ENV):
        return Path(os.environ[DEFAULT_BUNDLE_ENV])
    shipped = Path(__file__).resolve().parents[1] / "Resources" / "demo_bundle"
    return shipped if shipped.is_dir() else None
