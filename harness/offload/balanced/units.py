"""Placement units: the modules of a component that move between the CPU and the GPU together.

A placement unit is a leaf in the weight sense: a module that directly owns parameters/buffers (its own
tensors only, children are their own units). Which modules are quantized layers is the engine's answer
(`engines.base.Engine.offload_unit`): a quantized layer is atomic, moved with its whole subtree and never
split from its scales, and a module the engine ties to another layer (an NNCF weight decompressor, which
holds the scales) moves with that layer. Without an engine the generic rule of `Engine.offload_unit`
applies (a module holding tensor-subclass weights is atomic). A wrapper whose ``base_layer`` is atomic
(peft's LoRA layers) is atomic too. Modules that share a tensor form one unit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from engines.base import Engine, module_nbytes
from harness.offload.balanced.moves import is_plain, own_tensors

#: (path in the component, module) -> the path of the module it moves with, or None (`Engine.offload_unit`).
Rule = Callable[[str, nn.Module], Optional[str]]


@dataclass(eq=False)
class Unit:
    """Modules that move together. ``roots`` are moved whole when ``subtree`` (quantized layers),
    else only their own tensors."""

    name: str
    roots: list[nn.Module]
    subtree: bool
    nbytes: int = 0
    #: Not movable with .data swaps: move with the modules' own .to() (subclasses, bnb states).
    generic: bool = False
    #: Placed whatever the budget (tensors owned by the component root: no hook sees their use).
    required: bool = False
    on_device: bool = False
    #: On the device only for the forward in progress (streamed).
    transient: bool = False
    depth: int = 0
    pinned: bool = False
    pin_tried: bool = False
    resized: bool = False
    handles: list = field(default_factory=list)
    #: Plain tensors: [(CPU master, [(module, "p"|"b", key), ...])], one entry per distinct tensor.
    slots: list = field(default_factory=list)

    def modules(self) -> list[nn.Module]:
        out = []
        for root in self.roots:
            out.extend(root.modules() if self.subtree else [root])
        return out

    def tensors(self) -> list[torch.Tensor]:
        seen, out = set(), []
        for m in self.modules():
            for _, _, t in own_tensors(m):
                if id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
        return out


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def is_atomic(path: str, module: nn.Module, rule: Rule) -> bool:
    """Moved whole, with every child: the engine says so, or it wraps an atomic ``base_layer``."""
    return rule(path, module) == path or _wraps_atomic(path, module, rule)


def _wraps_atomic(path: str, module: nn.Module, rule: Rule) -> bool:
    base = module._modules.get("base_layer")
    return base is not None and is_atomic(_join(path, "base_layer"), base, rule)


def build_units(component: nn.Module, engine: Engine | None = None) -> list[Unit]:
    """The placement units of one component, in module order; ``engine`` answers which modules are
    quantized layers (None: the generic rule)."""
    rule: Rule = (engine if engine is not None else Engine).offload_unit
    units: list[Unit] = []
    by_path: dict[str, Unit] = {}
    tied: list[tuple[str, str, nn.Module]] = []  # (owner path, path, module)
    seen: set[int] = set()

    def visit(path: str, module: nn.Module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        owner = rule(path, module)
        if owner == path or _wraps_atomic(path, module, rule):
            seen.update(id(m) for m in module.modules())
            units.append(unit := Unit(path or "<root>", [module], subtree=True))
            by_path[path] = unit
            return
        if owner is not None:
            if own_tensors(module):
                tied.append((owner, path, module))
        elif own_tensors(module):
            units.append(unit := Unit(path or "<root>", [module], subtree=False, required=not path))
            by_path[path] = unit
        for child_name, child in module.named_children():
            visit(_join(path, child_name), child)

    visit("", component)
    for owner_path, path, module in tied:  # after the walk: the owner may come later in module order
        owner = by_path.get(owner_path)
        if owner is None:  # no unit at that path: the module's tensors are a unit of their own
            units.append(owner := Unit(path, [], subtree=False))
        owner.roots.append(module)
    units = _merge_shared(units)
    for unit in units:
        tensors = unit.tensors()
        unit.nbytes = module_nbytes(nn.Module(), extra=tensors)
        overrides_to = any(type(m).to is not nn.Module.to for m in unit.modules())
        unit.generic = overrides_to or not all(is_plain(t) for t in tensors)
    return units


def _merge_shared(units: list[Unit]) -> list[Unit]:
    """Units that share a tensor (tied weights) become one."""
    owner: dict[int, Unit] = {}
    merged: dict[int, Unit] = {}  # id(unit) -> the unit it was merged into
    out: list[Unit] = []

    def find(u: Unit) -> Unit:
        while id(u) in merged:
            u = merged[id(u)]
        return u

    for unit in units:
        target = None
        for t in unit.tensors():
            if id(t) in owner:
                target = find(owner[id(t)])
                break
        if target is None:
            out.append(unit)
            target = unit
        else:
            target.roots.extend(unit.roots)
            target.subtree = target.subtree or unit.subtree
            target.required = target.required or unit.required
            merged[id(unit)] = target
        for t in unit.tensors():
            owner.setdefault(id(t), target)
    return out
