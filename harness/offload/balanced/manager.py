"""The balanced offloader: dispatch, eviction, promotion and its books.

* Each top-level pipeline component (transformer / unet, text encoders, VAE) is a unit of dispatch.
  When its forward (or ``vae.decode`` / ``encode``) starts and it is not placed on the GPU, idle
  components may be moved back to the CPU (least recently used first, `eviction`); then as many of its
  layers as fit under the *high watermark* are moved onto the GPU (`placement.plan`, first fit in module
  order). The rest stay on the CPU and are *streamed* (`hooks`). A placed component whose streamed layers
  would now fit (memory freed since) has them promoted at its next forward.
* Eviction ``low_watermark`` is SD.Next's rule: at every dispatch, idle components leave while GPU use
  is above the *low watermark*, so in a pipeline that does not fit under it every component moves at
  every call. ``as_needed`` keeps them: one leaves at a dispatch only when the dispatched component's
  required layers and one streamed layer do not fit beside it, and while a component streams, an idle
  one leaves as soon as the bytes streamed since its dispatch reach that idle one's bytes (what moving
  it back later costs), which bounds the traffic at twice the best choice of either. The components a
  dispatch evicted that way are evicted up front at its next dispatch.
* Each forward of a component measures its *working memory* (activations and streamed layers in flight:
  peak allocated during the forward minus what was in use when it started). On CUDA the allocator's peak
  restarts at every dispatch (`harness.measure.restart_peak`, which keeps the run's own peak), so the figure
  is that forward's; ``decode`` / ``encode`` end at their entry guard (`hooks`), and a forward that ends
  with no hook at all is closed at the next dispatch. Once
  the working memory of the component and of those placed beside it is known, it may fill up to
  ``max_fill`` of the usable memory minus the largest of them, above the high watermark; while any is
  unknown it stays under the high watermark and leaves the known ones their room: a component that fits whole next to
  its activations is placed whole from its second forward on (nothing streamed, as with model offload),
  and one that does not streams only what must. ``max_fill: null`` keeps to the high watermark.
  The cap binds *reserved* memory, not allocated: layers placed one by one next to streamed layers land
  among the holes those left. With ``release_cache`` the allocator's cached free blocks go back to the
  driver before layers are placed.
* CPU copies are pinned (``pin_memory``) only for layers that move more than once: when a dispatch leaves
  a layer to stream and when its component is evicted, so placing a component that stays costs no pinning.
* A component entry point (``forward``, ``decode``, ``encode``) that runs out of device memory while idle
  components hold some evicts them all and runs once more (`relieve`): the first forward of a component
  whose working memory is not known yet (a video VAE's decode) may need more than the placement left it.
  Its second failure is the run's.
* Every move is counted (`BalancedOffload.stats`).

The mechanics are testable without a GPU: `BalancedOffload` takes the onload device and a memory-usage
function, so tests use ``cpu`` as a stand-in device.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from engines.base import Engine, module_nbytes
from harness import measure
from harness.measure import GIB, restart_peak
from harness.offload.balanced import hooks, placement
from harness.offload.balanced.moves import move, pin, to_cpu
from harness.offload.balanced.units import Unit, build_units
from harness.offload.options import BalancedOptions, check_balanced

_DEFAULTS = BalancedOptions()
EVICTIONS = next(f.metadata["choices"] for f in dataclasses.fields(BalancedOptions) if f.name == "eviction")


@dataclass(eq=False)
class Component:
    name: str
    module: nn.Module
    units: list[Unit]
    placed: bool = False
    last_used: float = 0.0
    counters: dict = field(default_factory=lambda: {
        "dispatches": 0, "evictions": 0, "promotions": 0, "moves_to_device": 0, "moves_to_host": 0,
        "bytes_to_device": 0, "bytes_to_host": 0, "oom_retries": 0})
    max_resident: int = 0
    #: The placement chosen at the latest dispatch or promotion (what the report shows).
    placement: dict = field(default_factory=dict)
    #: Working memory of one forward in bytes (latest measurement); None = not measured yet.
    work: int | None = None
    #: (bytes in use, allocator peak) when the forward in progress started.
    at_start: tuple[int, int] | None = None
    #: Every unit is placed: dispatch has nothing left to do until the component is evicted.
    whole: bool = False
    #: Bytes streamed since the latest dispatch, not yet paid off by evicting an idle component.
    rent: int = 0
    #: Components that streaming evicted during the latest dispatch (evicted up front at the next).
    rent_evicted: list = field(default_factory=list)

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
    ``torch.cuda.max_memory_allocated`` on CUDA, restarted at every dispatch, else not measured.
    ``engine``: the run's engine, which says which modules are quantized layers (`units.build_units`);
    None = the generic rule.
    The other arguments are the options of `harness.offload.options.BalancedOptions`.
    """

    def __init__(self, device: torch.device | str, usable: int,
                 high_watermark: float = _DEFAULTS.high_watermark, low_watermark: float = _DEFAULTS.low_watermark,
                 pin_memory: bool = _DEFAULTS.pin_memory, memory_used: Callable[[], int] | None = None,
                 max_fill: float | None = _DEFAULTS.max_fill, memory_peak: Callable[[], int] | None = None,
                 release_cache: bool = _DEFAULTS.release_cache, engine: Engine | None = None,
                 eviction: str = _DEFAULTS.eviction):
        check_balanced(high_watermark, low_watermark, max_fill)
        if eviction not in EVICTIONS:
            raise ValueError(f"balanced offload: eviction must be one of {', '.join(EVICTIONS)}, got {eviction!r}")
        if usable <= 0:
            raise ValueError(f"balanced offload: usable GPU memory must be positive, got {usable} bytes")
        self.device = torch.device(device)
        self.usable = int(usable)
        self.high = high_watermark
        self.low = low_watermark
        self.pin_memory = pin_memory and self.device.type == "cuda"
        self.max_fill = max_fill
        self.release_cache = release_cache
        self.eviction = eviction
        self.engine = engine
        self._memory_used = memory_used
        self._memory_peak = memory_peak
        self.components: dict[str, Component] = {}
        #: The components together exceed what stays on the device (the low watermark under eviction
        #: low_watermark, the high watermark under as_needed), so some will move (set by `install`).
        self.moves_again = True

    # -- accounting --
    def used(self) -> int:
        if self._memory_used is not None:
            return int(self._memory_used())
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return sum(c.bytes_on_device() for c in self.components.values())

    def release(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def peak(self) -> int | None:
        if self._memory_peak is not None:
            return int(self._memory_peak())
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return None

    @property
    def _restarts_peak(self) -> bool:
        """The allocator's peak restarts at each dispatch (CUDA, no injected peak function)."""
        return self._memory_peak is None and self.device.type == "cuda"

    def move_unit(self, comp: Component, unit: Unit, to_device: bool, streamed: bool = False) -> None:
        """Move one unit of ``comp`` and count the move; a ``streamed`` move (for one forward) pins the
        unit's CPU copies first (once) and adds its bytes to ``comp``'s rent."""
        if streamed:
            comp.rent += unit.nbytes
            if self.pin_memory:
                pin(unit)
        copied = move(unit, self.device, to_device)
        if to_device and unit.generic and not unit.resized:
            # a generic unit may change size at its first move (bitsandbytes quantizes then): plan with
            # the size it has on the device from now on
            unit.nbytes, unit.resized = module_nbytes(nn.Module(), extra=unit.tensors()), True
        c = comp.counters
        c["moves_to_device" if to_device else "moves_to_host"] += 1
        c["bytes_to_device" if to_device else "bytes_to_host"] += copied

    # -- installation --
    def install(self, components: dict[str, nn.Module]) -> "BalancedOffload":
        """Take over ``components``. A component wholly on the device already counts as placed, whole, under
        eviction as_needed, and under low_watermark when all fit under the low watermark together; its CPU
        copies are made only if it is evicted. Every other component starts on the CPU."""
        units = {}
        for name, module in components.items():
            if hasattr(module, "_hf_hook"):
                raise RuntimeError(f"balanced offload: component '{name}' already carries an accelerate hook "
                                   f"({type(module._hf_hook).__name__})")
            units[name] = build_units(module, self.engine)
        total = sum(u.nbytes for us in units.values() for u in us)
        keep = self.high if self.eviction == "as_needed" else self.low
        self.moves_again = total > keep * self.usable
        for name, module in components.items():
            comp = Component(name, module, units[name])
            stays = self.eviction == "as_needed" or not self.moves_again
            resident = stays and self.device.type != "cpu" and bool(comp.units) and all(
                t.device.type == self.device.type for u in comp.units for t in u.tensors())
            for unit in comp.units:
                if resident:
                    unit.on_device = True  # placed already; moved to the CPU only if evicted
                else:
                    to_cpu(unit)  # starts on the CPU, streamed until a dispatch places it
                    hooks.hook_unit(self, comp, unit)
            if resident:
                comp.placed = comp.whole = True
                comp.last_used = time.perf_counter()
                comp.snapshot()
            hooks.attach_component_hook(module, self, name)
            self.components[name] = comp
        return self

    def remove(self) -> None:
        """Undo `install`: every component back on the CPU, every hook gone."""
        for comp in self.components.values():
            for unit in comp.units:
                if unit.on_device:
                    move(unit, self.device, False)
                hooks.unhook_unit(unit)
            hooks.remove_component_hook(comp.module)
        self.components.clear()

    # -- dispatch --
    @torch.compiler.disable
    def activate(self, name: str) -> None:
        """Component ``name`` starts a forward: evict idle components, place it (or promote layers)."""
        for other in self.components.values():
            if other.at_start is not None:  # a forward that ended without the end hook (vae.decode)
                self._close(other)
        comp = self.components[name]
        comp.last_used = time.perf_counter()
        fresh = not comp.placed
        if fresh:
            comp.rent = 0
            if self.eviction == "low_watermark":
                for other in placement.evictions([(c.name, c.bytes_on_device()) for c in self._idle(comp)],
                                                 self.used(), int(self.low * self.usable)):
                    self.evict(other)
            else:
                ahead, comp.rent_evicted = comp.rent_evicted, []
                for other in self._idle(comp):
                    if other.name in ahead:
                        self.evict(other.name)
                        comp.rent_evicted.append(other.name)
                self._make_room(comp)
            comp.counters["dispatches"] += 1
            comp.placed = True
        streamed = [] if comp.whole else [u for u in comp.units if not u.on_device]
        if streamed and not fresh and self.eviction == "as_needed":
            self._pay_rent(comp)
        if streamed:
            if self.release_cache:
                self.release()
            keep = placement.plan([u.nbytes for u in streamed], self.room(comp), [u.required for u in streamed])
            for unit, flag in zip(streamed, keep):
                if flag:
                    self.move_unit(comp, unit, True)
                    hooks.unhook_unit(unit)
                elif self.pin_memory:
                    pin(unit)  # it streams from now on: pinned here, at the dispatch, not in a later call
            if not fresh:
                comp.counters["promotions"] += sum(keep)
            comp.whole = all(keep)
        else:
            comp.whole = True
        if fresh or streamed:
            comp.snapshot()
        if self._restarts_peak:
            restart_peak(self.device)
        peak = self.peak()
        comp.at_start = None if peak is None else (self.used(), peak, measure.RESETS[0])

    def room(self, comp: Component) -> int:
        """Bytes ``comp`` may still place. Once the working memory of ``comp`` and of every component placed
        beside it is known (and ``max_fill`` is set): up to ``max_fill`` of usable memory minus the largest
        of them. Before: up to the high watermark, and no further than leaves the known ones their room."""
        used = self.used()
        budget = int(self.high * self.usable) - used
        if self.max_fill is None:
            return budget
        works = [c.work for c in self.components.values() if c is comp or c.placed]
        fill = int(self.max_fill * self.usable) - used
        known = [w for w in works if w is not None]
        if len(known) == len(works):
            return fill - max(known, default=0)
        return min(budget, fill - max(known)) if known else budget

    def _idle(self, comp: Component) -> list[Component]:
        """Placed components other than ``comp`` holding bytes on the device, least recently used first."""
        return sorted((c for c in self.components.values() if c.placed and c is not comp and c.bytes_on_device()),
                      key=lambda c: c.last_used)

    def _make_room(self, comp: Component) -> None:
        """Eviction as_needed at a dispatch: idle components leave (least recently used first) only while
        ``comp``'s required layers and its largest streamed layer do not fit beside them."""
        missing = [u for u in comp.units if not u.on_device]
        if not missing:
            return
        need = sum(u.nbytes for u in missing if u.required) + max((u.nbytes for u in missing), default=0)
        for other in self._idle(comp):
            if self.room(comp) >= need:
                break
            self.evict(other.name)

    def _pay_rent(self, comp: Component) -> None:
        """While ``comp`` streams: evict each idle component whose bytes the streaming since ``comp``'s
        dispatch has already moved (so the layers it frees stop streaming)."""
        for other in self._idle(comp):
            cost = other.bytes_on_device()
            if comp.rent >= cost:
                self.evict(other.name)
                comp.rent -= cost
                comp.rent_evicted.append(other.name)

    @torch.compiler.disable
    def finished(self, name: str) -> None:
        """Component ``name`` ended a forward: update its working memory (`_close`)."""
        comp = self.components[name]
        if comp.at_start is not None:
            self._close(comp)

    def _close(self, comp: Component) -> None:
        """End ``comp``'s working-memory measurement: the peak since its forward started minus what was in
        use then; the component keeps the largest figure of its forwards (decode and encode differ, and a
        peak reset by the caller in between only lowers one). Without a restartable peak (an injected
        one), a forward that did not raise the peak keeps the earlier figure; the first is then an upper
        bound. A measurement that spans a reset of the run's peak (`MemoryProbe.reset_peak`) is void."""
        peak = self.peak()
        used, peak_before, resets = comp.at_start
        comp.at_start = None
        if peak is None or resets != measure.RESETS[0]:
            return  # the run reset the peak meanwhile (after its warm-up): this forward's figure is lost
        if self._restarts_peak:
            comp.work = max(comp.work or 0, peak - used)  # restarted at the dispatch: this forward's own peak
        elif peak > peak_before or comp.work is None:
            comp.work = max(0, peak - used)

    def relieve(self, name: str) -> bool:
        """``name``'s forward ran out of device memory: evict every idle component and void that forward's
        working-memory measurement. False, with nothing changed, when no idle component holds device bytes
        (a retry could only fail again)."""
        comp = self.components[name]
        idle = self._idle(comp)
        if not idle:
            return False
        for other in idle:
            self.evict(other.name)
        comp.at_start = None
        comp.counters["oom_retries"] += 1
        return True

    def evict(self, name: str) -> None:
        """Send ``name``'s placed units back to the CPU (their CPU copies pinned, with ``pin_memory``: they
        will move again) and hook them for streaming."""
        comp = self.components[name]
        for unit in comp.units:
            if unit.on_device and not unit.transient:
                self.move_unit(comp, unit, False)
                if self.pin_memory:
                    pin(unit)
                hooks.hook_unit(self, comp, unit)
        comp.placed = comp.whole = False
        comp.counters["evictions"] += 1

    # -- report --
    def report(self) -> dict:
        return {"mode": "balanced", "high_watermark": self.high, "low_watermark": self.low, "max_fill": self.max_fill,
                "eviction": self.eviction, "release_cache": self.release_cache,
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
                "oom_retries": n["oom_retries"],
                "gib_to_device": n["bytes_to_device"] / GIB, "gib_to_host": n["bytes_to_host"] / GIB,
            }
        return {"components": comps,
                "moves": sum(c["moves_to_device"] + c["moves_to_host"] for c in comps.values()),
                "gib_moved": sum(c["gib_to_device"] + c["gib_to_host"] for c in comps.values()),
                "counted_over": "every pipeline call since offload was installed (warm-up included); "
                                "a move to the host of a plain tensor drops the GPU copy (0 bytes copied)"}
