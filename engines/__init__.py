"""Quantization engines behind one interface (see `engines.base.Engine`).

Importing this package imports no backend, and not torch either: `engines.registry` maps names to
"module:Class" strings and imports a backend only when it is chosen; the names below are resolved from
`engines.base` / `engines.registry` on first use, so checking a name (a mistyped engine) stays cheap.
"""
from __future__ import annotations

import importlib

__all__ = ["Engine", "EngineError", "Unsupported", "available", "get_engine_class"]
_HOME = {"Engine": "engines.base", "EngineError": "engines.base", "Unsupported": "engines.base",
         "available": "engines.registry", "get_engine_class": "engines.registry"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'engines' has no attribute {name!r}")
