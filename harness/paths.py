"""Where the installed harness finds its own files."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def conf_dir() -> str:
    """The ``conf/`` package's folder: next to the sources in a checkout, in site-packages when installed."""
    import conf

    return str(Path(conf.__file__).resolve().parent)
