"""The hooks balanced offload installs.

Layer hooks: only on units that are not resident (a resident layer runs hook-free, so a compiled
component that fits keeps whole graphs). A forward pre-hook moves a streamed unit onto the device, a
forward hook drops it again once its outermost forward ends.

Component hook: an accelerate-style ``_hf_hook`` on each component root. diffusers reads its
``execution_device`` (pipeline tensors are made there) and calls its ``pre_forward`` from
``vae.decode`` / ``encode`` too, so every component's dispatch (`BalancedOffload.activate`) and end of
forward (`BalancedOffload.finished`) go through it.

Entry guard: each component's ``forward`` and, where it has them, ``decode`` / ``encode`` are wrapped on
the instance so that an out-of-memory error asks the manager to evict idle components
(`BalancedOffload.relieve`) and the call runs once more.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from harness.offload.balanced.manager import BalancedOffload, Component
    from harness.offload.balanced.units import Unit


def hook_unit(manager: BalancedOffload, comp: Component, unit: Unit) -> None:
    """Stream ``unit``: hook its roots so each forward finds it on the device (no-op if hooked)."""
    if unit.handles:
        return
    for m in unit.roots:
        # prepend: the layer is on the device before any other pre-hook looks at it
        unit.handles.append(m.register_forward_pre_hook(_pre(manager, comp, unit), prepend=True))
        unit.handles.append(m.register_forward_hook(_post(manager, comp, unit), always_call=True))


def unhook_unit(unit: Unit) -> None:
    for h in unit.handles:
        h.remove()
    unit.handles = []


def _pre(manager: BalancedOffload, comp: Component, unit: Unit):
    @torch.compiler.disable
    def pre(module, args):
        unit.depth += 1
        if unit.depth == 1 and not unit.on_device:
            manager.move_unit(comp, unit, True, streamed=True)
            unit.transient = True
    return pre


def _post(manager: BalancedOffload, comp: Component, unit: Unit):
    @torch.compiler.disable
    def post(module, args, output):
        unit.depth = max(unit.depth - 1, 0)
        if unit.depth == 0 and unit.transient:
            manager.move_unit(comp, unit, False)
            unit.transient = False
    return post


def attach_component_hook(module: nn.Module, manager: BalancedOffload, name: str) -> None:
    """Install the component hook of component ``name`` on its root ``module``."""
    from accelerate.hooks import ModelHook, add_hook_to_module
    from accelerate.utils import send_to_device

    class ComponentHook(ModelHook):
        def __init__(self):
            self.execution_device = manager.device

        def pre_forward(self, module, *args, **kwargs):
            manager.activate(name)
            if manager.device.type != "cpu":
                args, kwargs = send_to_device((args, kwargs), manager.device)
            return args, kwargs

        def post_forward(self, module, output):
            manager.finished(name)
            return output

    add_hook_to_module(module, ComponentHook())
    for entry in ENTRIES:
        if callable(getattr(module, entry, None)):
            setattr(module, entry, _guard(getattr(module, entry), manager, name))
    module._balanced_guards = [e for e in ENTRIES if e in vars(module)]


#: The methods through which a pipeline calls a component.
ENTRIES = ("forward", "decode", "encode")


def _guard(fn, manager: BalancedOffload, name: str):
    """``fn``, run once more after an out-of-memory error if the manager could free device memory, and the
    component's forward ended (`BalancedOffload.finished`) when it returns. The retry runs outside the
    ``except`` block, so the failed attempt's tensors (held by its traceback) are freed first. While
    compiling it is ``fn`` itself."""
    def _ended(out):
        manager.finished(name)  # ``decode`` / ``encode`` have no end hook of their own
        return out

    def guarded(*args, **kwargs):
        if torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        try:
            return _ended(fn(*args, **kwargs))
        except torch.OutOfMemoryError:
            if not manager.relieve(name):
                raise
        manager.release()
        return _ended(fn(*args, **kwargs))
    guarded.__wrapped__ = fn
    return guarded


def remove_component_hook(module: nn.Module) -> None:
    from accelerate.hooks import remove_hook_from_module

    for entry in vars(module).pop("_balanced_guards", []):
        vars(module).pop(entry, None)
    remove_hook_from_module(module)
