"""Balanced offload: an in-house re-implementation of SD.Next's balanced offload (design.md).

Behaviour:
* Each top-level pipeline component (transformer / unet, text encoders, VAE) is a unit of dispatch.
  When its forward (or ``vae.decode`` / ``encode``) starts and it is not placed on the GPU, idle
  components are first moved back to the CPU (least recently used first) while GPU use is above the
  *low watermark*; then as many of its layers as fit under the *high watermark* are moved onto the GPU
  (`plan`, first fit in module order). The rest stay on the CPU and are *streamed*: a forward pre-hook
  moves a layer onto the GPU, a forward hook drops it again. A placed component whose streamed layers
  would now fit (memory freed since) has them promoted at its next forward.
* Each forward of a component measures its *working memory* (activations and streamed layers in flight:
  peak allocated during the forward minus what was in use when it started; an upper bound, since the
  allocator's peak is never reset here). Once measured, the component may fill up to ``max_fill`` of the
  usable memory minus that working memory, above the high watermark: a component that fits whole next to
  its activations is placed whole from its second forward on (as fast as model offload where that fits),
  and one that does not streams only what must. ``max_fill: null`` keeps to the high watermark.
  The cap binds *reserved* memory, not allocated: layers placed one by one next to streamed layers land
  among the holes those left, and reserved ran ~1.8 GiB above allocated for BF16 FLUX.1-dev under a 24 GiB
  cap, so ``max_fill`` 0.95 ran out of memory there. With ``release_cache`` (the default) the allocator's
  cached free blocks go back to the driver before layers are placed, and 0.95 runs whole.
* A placement unit is a leaf in the weight sense: a module that directly owns parameters/buffers
  (its own tensors only, children are their own units). A quantized layer is atomic: a module with
  tensor-subclass weights (torchao, quanto), a bitsandbytes / quanto / GGUF / SDNQ layer or a peft
  wrapper around one moves with its whole subtree, and an NNCF weight decompressor (which holds the
  scales) moves with the layer whose weight it decompresses. Modules that share a tensor form one unit.
* Watermarks are fractions of the usable GPU memory: the per-process cap when
  ``run.gpu_memory_fraction`` is set, else the card (``options.usable_gib`` overrides both).

Moves keep the CPU copy of plain tensors (pinned at its first move, with ``pin_memory``), so dropping a
layer from the GPU costs no copy; quantized tensor subclasses and bitsandbytes parameters are moved
with the library's own ``.to()`` both ways. Every move is counted (`BalancedOffload.stats`).

The placement logic is `plan` (pure). The mechanics are testable without a GPU: `BalancedOffload`
takes the onload device and a memory-usage function, so tests use ``cpu`` as a stand-in device.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from engines.base import module_nbytes
from harness.measure import GIB

#: Options of ``offload=balanced`` and their defaults (conf/offload/balanced.yaml lists the same).
DEFAULT_OPTIONS = {
    "high_watermark": 0.7,   # fraction of usable GPU memory a component may fill when it is dispatched
    "low_watermark": 0.2,    # idle components are moved back to the CPU while GPU use is above this
    "pin_memory": True,      # keep the CPU copies of layers in pinned memory (asynchronous, faster copies)
    "usable_gib": None,      # usable GPU memory; None = the per-process cap, else the whole card
    "max_fill": 0.95,        # with its working memory measured, a component may fill this fraction (None: off)
    "release_cache": True,   # torch.cuda.empty_cache() before placing layers (less fragmentation, a little time)
}

#: Modules of these packages are quantized layers: never split from their scales.
_QUANTIZED_PACKAGES = ("bitsandbytes.", "optimum.quanto.", "diffusers.quantizers.gguf.", "engines.sdnq.", "torchao.")
_BNB_ATTRS = ("quant_state", "SCB", "CB")


# -- planning (pure) ----------------------------------------------------------------------------
def plan(sizes: Sequence[int], budget: int, required: Sequence[bool] | None = None) -> list[bool]:
    """Which units to keep on the GPU: first fit in order under ``budget`` bytes.

    Units are taken in module (execution) order; a unit that does not fit is streamed and the next
    ones are still tried, so small layers fill what is left. ``required`` units are placed whatever
    the budget (and count against it). Returns one flag per unit: True = resident, False = streamed.
    """
    required = list(required) if required is not None else [False] * len(sizes)
    if len(required) != len(sizes):
        raise ValueError("plan: sizes and required differ in length")
    if any(s < 0 for s in sizes):
        raise ValueError("plan: unit sizes must be >= 0")
    left = budget - sum(s for s, r in zip(sizes, required) if r)
    out = []
    for size, req in zip(sizes, required):
        if req:
            out.append(True)
        elif size <= left:
            out.append(True)
            left -= size
        else:
            out.append(False)
    return out


def evictions(placed: Sequence[tuple[str, int]], used: int, low: int) -> list[str]:
    """Idle components to move back to the CPU, least recently used first, while ``used`` bytes are
    above ``low``. ``placed`` is (name, bytes on the GPU), least recently used first."""
    out = []
    for name, nbytes in placed:
        if used <= low:
            break
        out.append(name)
        used -= nbytes
    return out


# -- units ----------------------------------------------------------------------------------------
def is_plain(t: torch.Tensor) -> bool:
    """A tensor whose storage can be swapped with ``.data`` (no subclass state to carry along)."""
    if type(t) in (torch.Tensor, nn.Parameter):
        return True
    if is_traceable_wrapper_subclass(t) or any(hasattr(t, a) for a in _BNB_ATTRS):
        return False
    # diffusers' GGUFParameter: a Parameter subclass whose quant_type survives .data / .to()
    return isinstance(t, nn.Parameter) and type(t).__module__.startswith("diffusers.quantizers.gguf")


def _direct(module: nn.Module) -> list[tuple[str, str, torch.Tensor]]:
    return ([("p", k, t) for k, t in module._parameters.items() if t is not None]
            + [("b", k, t) for k, t in module._buffers.items() if t is not None])


def is_atomic(module: nn.Module) -> bool:
    """A quantized layer: moved whole (with every child), never split from its scales."""
    if any(not is_plain(t) for _, _, t in _direct(module)):
        return True
    if type(module).__module__.startswith(_QUANTIZED_PACKAGES) and any(True for _ in module.parameters()):
        return True
    base = getattr(module, "base_layer", None)  # peft LoRA wrapper around a quantized layer
    return isinstance(base, nn.Module) and type(module).__module__.startswith("peft.") and is_atomic(base)


def _is_nncf_hooks(module: nn.Module) -> bool:
    return type(module).__name__ == "HookStorage" and type(module).__module__.startswith("nncf.")


def _nncf_owner(path: str) -> str:
    """Module path of the layer an NNCF hook belongs to: hook keys look like
    ``transformer_blocks:0:attn:to_q:weight__0`` (the hooked tensor, ``:`` for ``.``)."""
    key = path.split(".")[0]
    return key.split("__")[0].rsplit(":", 1)[0].replace(":", ".")


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
            for _, _, t in _direct(m):
                if id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
        return out


def build_units(component: nn.Module) -> list[Unit]:
    """The placement units of one component, in module order."""
    units: list[Unit] = []
    by_path: dict[str, Unit] = {}
    nncf: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def visit(path: str, module: nn.Module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        if _is_nncf_hooks(module):
            for sub, m in module.named_modules():
                if _direct(m):
                    seen.add(id(m))
                    nncf.append((sub.split(".", 1)[1] if "." in sub else sub, m))
            return
        if is_atomic(module):
            seen.update(id(m) for m in module.modules())
            units.append(unit := Unit(path or "<root>", [module], subtree=True))
            by_path[path] = unit
            return
        if _direct(module):
            units.append(unit := Unit(path or "<root>", [module], subtree=False, required=not path))
            by_path[path] = unit
        for child_name, child in module.named_children():
            visit(f"{path}.{child_name}" if path else child_name, child)

    visit("", component)
    for sub, m in nncf:  # NNCF decompressors hold the scales: they go with their layer
        owner = by_path.get(_nncf_owner(sub))
        if owner is None:
            units.append(owner := Unit(f"<nncf>{sub}", [], subtree=False))
        owner.roots.append(m)
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


# -- moving ---------------------------------------------------------------------------------------
def _collect_slots(unit: Unit) -> None:
    by_tensor: dict[int, tuple[torch.Tensor, list]] = {}
    for m in unit.modules():
        for kind, key, t in _direct(m):
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
def _outside_function_modes():
    """Moves run outside any torch-function mode: NNCF's hook mode would otherwise apply a layer's
    decompressor to the very ``param.data`` being swapped (a move must see the stored tensors)."""
    modes = []
    while torch._C._len_torch_function_stack() > 0:
        modes.append(torch.overrides._pop_mode())
    try:
        yield
    finally:
        for mode in reversed(modes):
            torch.overrides._push_mode(mode)


def move(unit: Unit, device: torch.device, to_device: bool) -> int:
    """Move ``unit`` onto ``device`` (or back to the CPU); return the bytes copied."""
    with _outside_function_modes():
        return _move(unit, device, to_device)


def _move(unit: Unit, device: torch.device, to_device: bool) -> int:
    if unit.generic:
        target = device if to_device else torch.device("cpu")
        for root in unit.roots:
            if unit.subtree:
                root.to(target)
            else:
                root._apply(lambda t: t.to(target), recurse=False)
        unit.on_device = to_device
        return unit.nbytes
    if not unit.slots:
        _collect_slots(unit)
    for entry in unit.slots:
        master, places = entry
        _assign(places, master.to(device, non_blocking=unit.pinned) if to_device else master)
    unit.on_device = to_device
    return unit.nbytes if to_device else 0


def _to_cpu(unit: Unit) -> None:
    if all(t.device.type == "cpu" for t in unit.tensors()):
        return
    cpu = torch.device("cpu")
    for root in unit.roots:
        if unit.subtree:
            root.to(cpu)
        else:
            root._apply(lambda t: t.to(cpu), recurse=False)
    unit.slots, unit.on_device = [], False


def pin(unit: Unit) -> None:
    """Keep the CPU copies of a plain unit in page-locked memory (asynchronous, faster copies)."""
    if unit.generic or unit.pin_tried:
        return
    unit.pin_tried = True
    with _outside_function_modes():
        _pin(unit)


def _pin(unit: Unit) -> None:
    if not unit.slots:
        _collect_slots(unit)
    try:
        pinned = [master.pin_memory() for master, _ in unit.slots]
    except Exception:  # noqa: BLE001 - no CUDA host allocator, or a type that cannot be pinned: stay pageable
        return
    for entry, p in zip(unit.slots, pinned):
        entry[0] = p
        if not unit.on_device:
            _assign(entry[1], p)
    unit.pinned = True


# -- the offloader --------------------------------------------------------------------------------
@dataclass(eq=False)
class Component:
    name: str
    module: nn.Module
    units: list[Unit]
    placed: bool = False
    last_used: float = 0.0
    counters: dict = field(default_factory=lambda: {
        "dispatches": 0, "evictions": 0, "promotions": 0, "moves_to_device": 0, "moves_to_host": 0,
        "bytes_to_device": 0, "bytes_to_host": 0})
    max_resident: int = 0
    #: The placement chosen at the latest dispatch or promotion (what the report shows).
    placement: dict = field(default_factory=dict)
    #: Working memory of one forward in bytes (latest measurement); None = not measured yet.
    work: int | None = None
    #: (bytes in use, allocator peak) when the forward in progress started.
    at_start: tuple[int, int] | None = None
    #: Every unit is placed: dispatch has nothing left to do until the component is evicted.
    whole: bool = False

    @property
    def nbytes(self) -> int:
        return sum(u.nbytes for u in self.units)

    def bytes_on_device(self) -> int:
        return sum(u.nbytes for u in self.units if u.on_device)

    def snapshot(self) -> None:
        resident = [u for u in self.units if u.on_device and not u.transient]
        streamed = [u for u in self.units if not (u.on_device and not u.transient)]
        self.placement = {"resident_bytes": sum(u.nbytes for u in resident), "resident_units": len(resident),
                          "streamed_bytes": sum(u.nbytes for u in streamed), "streamed_units": len(streamed),
                          "streamed_first": [u.name for u in streamed[:3]]}
        self.max_resident = max(self.max_resident, self.placement["resident_bytes"])


class BalancedOffload:
    """Installs balanced offload on a set of components and keeps its books.

    ``device``: where layers compute (a CUDA device; tests pass ``cpu`` as a stand-in).
    ``usable``: usable bytes of that device. ``memory_used``: bytes in use on it now; None =
    ``torch.cuda.memory_allocated`` on CUDA, else the bytes of the units this offloader placed there.
    ``memory_peak``: the allocator's peak so far (to measure working memory); None = 
    ``torch.cuda.max_memory_allocated`` on CUDA, else not measured. ``max_fill``: see the module docstring.
    ``release_cache``: return the allocator's cached free blocks to the driver before placing layers, so
    that placed layers do not land between the holes streamed layers and activations left (the cap binds
    reserved memory, not allocated).
    """

    def __init__(self, device: torch.device | str, usable: int, high_watermark: float = 0.7,
                 low_watermark: float = 0.2, pin_memory: bool = True,
                 memory_used: Callable[[], int] | None = None, max_fill: float | None = 0.95,
                 memory_peak: Callable[[], int] | None = None, release_cache: bool = True):
        if not 0 < low_watermark <= high_watermark <= 1:
            raise ValueError(f"balanced offload needs 0 < low_watermark <= high_watermark <= 1, got "
                             f"low={low_watermark}, high={high_watermark}")
        if usable <= 0:
            raise ValueError(f"balanced offload: usable GPU memory must be positive, got {usable} bytes")
        if max_fill is not None and not 0 < max_fill <= 1:
            raise ValueError(f"balanced offload needs 0 < max_fill <= 1 (or max_fill null), got {max_fill}")
        self.device = torch.device(device)
        self.usable = int(usable)
        self.high = high_watermark
        self.low = low_watermark
        self.pin_memory = pin_memory and self.device.type == "cuda"
        self.max_fill = max_fill
        self.release_cache = release_cache
        self._memory_used = memory_used
        self._memory_peak = memory_peak
        self.components: dict[str, Component] = {}

    # -- accounting --
    def used(self) -> int:
        if self._memory_used is not None:
            return int(self._memory_used())
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return sum(c.bytes_on_device() for c in self.components.values())

    def _release(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def peak(self) -> int | None:
        if self._memory_peak is not None:
            return int(self._memory_peak())
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return None

    def _count(self, comp: Component, unit: Unit, to_device: bool) -> None:
        if to_device and self.pin_memory:
            pin(unit)  # once, at the first move: lands in the first call, not in steady state
        copied = move(unit, self.device, to_device)
        if to_device and unit.generic and not unit.resized:
            # bitsandbytes quantizes at its first move to the GPU: plan with the real size from now on
            unit.nbytes, unit.resized = module_nbytes(nn.Module(), extra=unit.tensors()), True
        c = comp.counters
        c["moves_to_device" if to_device else "moves_to_host"] += 1
        c["bytes_to_device" if to_device else "bytes_to_host"] += copied

    # -- installation --
    def install(self, components: dict[str, nn.Module]) -> "BalancedOffload":
        for name, module in components.items():
            if hasattr(module, "_hf_hook"):
                raise RuntimeError(f"balanced offload: component '{name}' already carries an accelerate hook "
                                   f"({type(module._hf_hook).__name__})")
            comp = Component(name, module, build_units(module))
            for unit in comp.units:
                _to_cpu(unit)  # every unit starts on the CPU, streamed until a dispatch places it
                self._hook(comp, unit)
            _attach_component_hook(module, self, name)
            self.components[name] = comp
        return self

    def remove(self) -> None:
        """Undo `install`: every component back on the CPU, every hook gone."""
        from accelerate.hooks import remove_hook_from_module

        for comp in self.components.values():
            for unit in comp.units:
                if unit.on_device:
                    move(unit, self.device, False)
                self._unhook(unit)
            remove_hook_from_module(comp.module)
        self.components.clear()

    # -- hooks: only on units that are not resident (a resident layer runs hook-free, so a compiled
    # component that fits keeps whole graphs) --
    def _hook(self, comp: Component, unit: Unit) -> None:
        if unit.handles:
            return
        for m in unit.roots:
            # prepend: the layer is on the device before any other pre-hook looks at it
            unit.handles.append(m.register_forward_pre_hook(self._make_pre(comp, unit), prepend=True))
            unit.handles.append(m.register_forward_hook(self._make_post(comp, unit), always_call=True))

    @staticmethod
    def _unhook(unit: Unit) -> None:
        for h in unit.handles:
            h.remove()
        unit.handles = []

    def _make_pre(self, comp: Component, unit: Unit):
        @torch.compiler.disable
        def pre(module, args):
            unit.depth += 1
            if unit.depth == 1 and not unit.on_device:
                self._count(comp, unit, True)
                unit.transient = True
        return pre

    def _make_post(self, comp: Component, unit: Unit):
        @torch.compiler.disable
        def post(module, args, output):
            unit.depth = max(unit.depth - 1, 0)
            if unit.depth == 0 and unit.transient:
                self._count(comp, unit, False)
                unit.transient = False
        return post

    @torch.compiler.disable
    def activate(self, name: str) -> None:
        """Component ``name`` starts a forward: evict idle components, place it (or promote layers)."""
        comp = self.components[name]
        comp.last_used = time.perf_counter()
        fresh = not comp.placed
        if fresh:
            idle = sorted((c for c in self.components.values() if c.placed and c is not comp),
                          key=lambda c: c.last_used)
            for other in evictions([(c.name, c.bytes_on_device()) for c in idle], self.used(),
                                   int(self.low * self.usable)):
                self.evict(other)
            comp.counters["dispatches"] += 1
            comp.placed = True
        streamed = [] if comp.whole else [u for u in comp.units if not u.on_device]
        if streamed:
            if self.release_cache:
                self._release()
            used = self.used()
            budget = int(self.high * self.usable) - used
            if comp.work is not None and self.max_fill is not None:
                budget = max(budget, int(self.max_fill * self.usable) - comp.work - used)
            keep = plan([u.nbytes for u in streamed], budget, [u.required for u in streamed])
            for unit, flag in zip(streamed, keep):
                if flag:
                    self._count(comp, unit, True)
                    self._unhook(unit)
            if not fresh:
                comp.counters["promotions"] += sum(keep)
            comp.whole = all(keep)
        else:
            comp.whole = True
        if fresh or streamed:
            comp.snapshot()
        peak = self.peak()
        comp.at_start = None if peak is None else (self.used(), peak)

    @torch.compiler.disable
    def finished(self, name: str) -> None:
        """Component ``name`` ended a forward: update its working memory (peak since it started minus
        what was in use then - an upper bound, exact when the peak was reached in this forward)."""
        comp = self.components[name]
        peak = self.peak()
        if comp.at_start is not None and peak is not None:
            comp.work = max(0, peak - comp.at_start[0])
        comp.at_start = None

    def evict(self, name: str) -> None:
        comp = self.components[name]
        for unit in comp.units:
            if unit.on_device and not unit.transient:
                self._count(comp, unit, False)
                self._hook(comp, unit)
        comp.placed = comp.whole = False
        comp.counters["evictions"] += 1

    # -- report --
    def describe(self) -> dict:
        return {"mode": "balanced", "high_watermark": self.high, "low_watermark": self.low, "max_fill": self.max_fill,
                "release_cache": self.release_cache,
                "usable_gib": self.usable / GIB, "pin_memory": self.pin_memory,
                "unit": "leaf module (own parameters/buffers); quantized layers whole, with their scales",
                **self.stats()}

    def stats(self) -> dict:
        """Placement and traffic per component, counted since `install` (every pipeline call,
        warm-up included): bytes resident vs streamed in the current placement, moves and bytes."""
        comps = {}
        for name, c in self.components.items():
            n, p = c.counters, c.placement
            comps[name] = {
                "gib": c.nbytes / GIB, "units": len(c.units),
                "quantized_units": sum(u.subtree for u in c.units),
                "resident_gib": p["resident_bytes"] / GIB if p else None,
                "resident_units": p.get("resident_units"),
                "streamed_gib": p["streamed_bytes"] / GIB if p else None,
                "streamed_units": p.get("streamed_units"), "streamed_first": p.get("streamed_first"),
                "max_resident_gib": c.max_resident / GIB,
                "work_gib": None if c.work is None else c.work / GIB,
                "dispatches": n["dispatches"], "evictions": n["evictions"], "promotions": n["promotions"],
                "moves_to_device": n["moves_to_device"], "moves_to_host": n["moves_to_host"],
                "gib_to_device": n["bytes_to_device"] / GIB, "gib_to_host": n["bytes_to_host"] / GIB,
            }
        return {"components": comps,
                "moves": sum(c["moves_to_device"] + c["moves_to_host"] for c in comps.values()),
                "gib_moved": sum(c["gib_to_device"] + c["gib_to_host"] for c in comps.values()),
                "counted_over": "every pipeline call since offload was installed (warm-up included); "
                                "a move to the host of a plain tensor drops the GPU copy (0 bytes copied)"}

    def placement(self) -> dict[str, dict[str, str]]:
        """{component: {unit: "device" | "host"}} now (for tests and debugging)."""
        return {name: {u.name: "device" if u.on_device else "host" for u in c.units}
                for name, c in self.components.items()}


def _attach_component_hook(module: nn.Module, manager: BalancedOffload, name: str) -> None:
    """An accelerate-style ``_hf_hook`` on the component root: diffusers reads its ``execution_device``
    (pipeline tensors are made there) and calls ``pre_forward`` from ``vae.decode`` / ``encode`` too."""
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


def usable_bytes(device: torch.device, usable_gib: float | None = None) -> int:
    """Usable memory of ``device``: ``usable_gib`` if given, else the per-process cap
    (`torch.cuda.set_per_process_memory_fraction`), else the whole card."""
    if usable_gib:
        return int(usable_gib * GIB)
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = 1.0
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    if getter is not None:
        fraction = float(getter(device))
    return int(total * fraction)


def check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"offload=balanced has no option {', '.join(unknown)}; "
                         f"options: {', '.join(DEFAULT_OPTIONS)}")
    return {**DEFAULT_OPTIONS, **options}


def apply(pipe, options: dict, device: torch.device) -> dict:
    """Install balanced offload on every nn.Module component of ``pipe``; return its description."""
    opts = check_options(dict(options))
    components = {n: m for n, m in pipe.components.items() if isinstance(m, nn.Module)}
    fill = opts["max_fill"]
    manager = BalancedOffload(device, usable_bytes(device, opts["usable_gib"]), float(opts["high_watermark"]),
                              float(opts["low_watermark"]), bool(opts["pin_memory"]),
                              max_fill=None if fill is None else float(fill),
                              release_cache=bool(opts["release_cache"]))
    manager.install(components)
    pipe._balanced_offload = manager
    return manager.describe()


def stats(pipe) -> dict:
    """The offloader's placement and traffic, or {} when ``pipe`` has no balanced offload."""
    manager = getattr(pipe, "_balanced_offload", None)
    return manager.stats() if manager is not None else {}
