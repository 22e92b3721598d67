"""Lazy engine registry: name -> "module:Class". A backend is imported only when chosen."""
from __future__ import annotations

import difflib
import importlib.util
import importlib

ENGINES: dict[str, str] = {
    "bf16": "engines.bf16:BF16Engine",
    "torchao": "engines.torchao:TorchAOEngine",
    "bnb": "engines.bnb:BitsAndBytesEngine",
    "quanto": "engines.quanto:QuantoEngine",
    "nncf": "engines.nncf:NNCFEngine",
    "gguf": "engines.gguf:GGUFEngine",
    "layerwise": "engines.layerwise:LayerwiseEngine",
    "sdnq": "engines.sdnq.engine:SDNQEngine",
    "fault": "engines.fault:FaultEngine",
}
#: Registered but never listed or suggested: fault injection for the isolation tests.
HIDDEN = frozenset({"fault"})


def available() -> list[str]:
    """Registered engine names whose module exists in this checkout."""
    return [name for name, target in ENGINES.items()
            if importlib.util.find_spec(target.split(":")[0]) is not None]


def visible() -> list[str]:
    """The engines a user chooses from (listed, suggested)."""
    return [name for name in available() if name not in HIDDEN]


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    """"Unknown engine 'x'. Did you mean: y? Available: a, b, c" (shared by every config group)."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"Unknown {kind} '{name}'.{hint} Available: {', '.join(choices)}"


def get_engine_class(name: str):
    """Import and return the Engine subclass registered as ``name``."""
    names = available()
    if name not in names:
        raise KeyError(unknown_name_message("engine", name, names))
    module_name, cls_name = ENGINES[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)
