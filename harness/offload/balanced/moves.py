"""Moving a placement unit between the CPU and the device.

A unit of plain tensors keeps its CPU copies (pinned at its first move, with ``pin_memory`` and when
the manager expects it to move again) and is
moved by swapping each tensor's storage (``param.data`` / the buffer slot): dropping it from the GPU
costs no copy. A unit that is not plain (`Unit.generic`: quantized tensor subclasses, bitsandbytes
parameters, modules with their own ``.to()``) is moved with the modules' own ``.to()`` both ways.
Moves run outside any torch-function mode (`outside_function_modes`).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

if TYPE_CHECKING:
    from harness.offload.balanced.units import Unit

_CPU = torch.device("cpu")


def own_tensors(module: nn.Module) -> list[tuple[str, str, torch.Tensor]]:
    """The tensors ``module`` holds directly (not its children's): ("p" | "b", name, tensor)."""
    return ([("p", k, t) for k, t in module._parameters.items() if t is not None]
            + [("b", k, t) for k, t in module._buffers.items() if t is not None])


def _is_metadata(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, torch.dtype)) or (
        isinstance(value, tuple) and all(_is_metadata(v) for v in value))


def is_plain(t: torch.Tensor) -> bool:
    """A tensor whose storage can be swapped with ``.data`` (no state outside its storage to carry along):
    a plain Tensor / Parameter, or a Parameter subclass that is no wrapper subclass, keeps ``Tensor.to``
    and carries only metadata attributes (e.g. diffusers' GGUFParameter and its quant_type)."""
    if type(t) in (torch.Tensor, nn.Parameter):
        return True
    if not isinstance(t, nn.Parameter) or is_traceable_wrapper_subclass(t) or type(t).to is not torch.Tensor.to:
        return False
    return all(_is_metadata(v) for v in vars(t).values())


def _collect_slots(unit: Unit) -> None:
    by_tensor: dict[int, tuple[torch.Tensor, list]] = {}
    for m in unit.modules():
        for kind, key, t in own_tensors(m):
            entry = by_tensor.setdefault(id(t), (t.data if kind == "p" else t, []))
            entry[1].append((m, kind, key))
    unit.slots = [[master, places] for master, places in by_tensor.values()]


def _assign(places: list, value: torch.Tensor) -> None:
    for module, kind, key in places:
        if kind == "p":
            module._parameters[key].data = value
        else:
            module._buffers[key] = value


@contextmanager
def outside_function_modes():
    """Run the body with no torch-function mode active (and restore the stack after): a mode such as
    NNCF's hook executor would otherwise apply a layer's decompressor to the very ``param.data`` being
    swapped, and a move must see the stored tensors."""
    modes = []
    while torch._C._len_torch_function_stack() > 0:
        modes.append(torch.overrides._pop_mode())
    try:
        yield
    finally:
        for mode in reversed(modes):
            torch.overrides._push_mode(mode)


def _to(unit: Unit, target: torch.device) -> None:
    """The modules' own ``.to()``: whole subtrees for atomic units, else each root's own tensors."""
    for root in unit.roots:
        if unit.subtree:
            root.to(target)
        else:
            root._apply(lambda t: t.to(target), recurse=False)


def move(unit: Unit, device: torch.device, to_device: bool) -> int:
    """Move ``unit`` onto ``device`` (or back to the CPU); return the bytes copied."""
    with outside_function_modes():
        if unit.generic:
            _to(unit, device if to_device else _CPU)
            unit.on_device = to_device
            return unit.nbytes
        if not unit.slots:
            _collect_slots(unit)
        copied_back = False
        for entry in unit.slots:
            master, places = entry
            if not to_device and master.device.type != "cpu":
                master = entry[0] = master.to(_CPU)  # a unit that started on the device gets its CPU copy
                copied_back = True
            _assign(places, master.to(device, non_blocking=unit.pinned) if to_device else master)
        unit.on_device = to_device
        return unit.nbytes if to_device or copied_back else 0


def to_cpu(unit: Unit) -> None:
    """Put ``unit`` on the CPU as its starting point (before any hook), dropping any kept copies."""
    if all(t.device.type == "cpu" for t in unit.tensors()):
        return
    _to(unit, _CPU)
    unit.slots, unit.on_device = [], False


def pin(unit: Unit) -> None:
    """Keep the CPU copies of a plain unit in page-locked memory (asynchronous, faster copies). Tried
    once per unit; a unit that cannot be pinned (no CUDA host allocator, a type that refuses) stays
    pageable."""
    if unit.generic or unit.pin_tried:
        return
    unit.pin_tried = True
    with outside_function_modes():
        if not unit.slots:
            _collect_slots(unit)
        try:
            pinned = [master.pin_memory() for master, _ in unit.slots]
        except Exception:  # noqa: BLE001 - stay pageable
            return
        for entry, p in zip(unit.slots, pinned):
            entry[0] = p
            if not unit.on_device:
                _assign(entry[1], p)
        unit.pinned = True
