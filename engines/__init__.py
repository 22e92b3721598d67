"""Quantization engines behind one interface (see `engines.base.Engine`).

Importing this package imports no backend: `engines.registry` maps names to
"module:Class" strings and imports a backend only when it is chosen.
"""
from engines.base import Engine, EngineError, Unsupported
from engines.registry import available, get_engine_class

__all__ = ["Engine", "EngineError", "Unsupported", "available", "get_engine_class"]
