"""The hooks balanced offload installs.

Layer hooks: only on units that are not resident (a resident layer runs hook-free, so a compiled
component that fits keeps whole graphs). A forward pre-hook moves a streamed unit onto the device, a
forward hook drops it again once its outermost forward ends.

Component hook: an accelerate-style ``_hf_hook`` on each component root. diffusers reads its
``execution_device`` (pipeline tensors are made there) and calls its ``pre_forward`` from
``vae.decode`` / ``encode`` too, so every component's dispatch (`BalancedOffload.activate`) and end of
forward (`BalancedOffload.finished`) go through it.
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


def remove_component_hook(module: nn.Module) -> None:
    from accelerate.hooks import remove_hook_from_module

    remove_hook_from_module(module)
