"""The Engine interface every quantization backend implements.

Contract, in the order the harness calls it:

1. ``check_platform(device)`` - raise `Unsupported` for a combination the engine knows it
   cannot run here (no CUDA, a dtype the hardware lacks, a missing package), before any loading.
2. Loading. In ``pre`` mode the harness calls ``load_component(name, cls, path, **kw)`` for every
   component the engine targets, so the engine can quantize while weights are read (for
   diffusers/transformers backends: by passing a ``quantization_config``). In ``post`` mode the
   component is loaded in BF16 and ``quantize(name, module)`` converts it in place.
3. ``verify(name, module)`` proves the conversion happened: it counts the modules that now hold
   quantized weights and raises `EngineError` when none do, so a run that quantized nothing is
   never reported as quantized.
4. ``report()`` returns what is needed to reproduce the run: backend versions and resolved
   settings.

An engine never falls back silently to BF16: what it cannot do raises `Unsupported(reason)`.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable

import torch

from engines.options import NoOptions, check as check_options, defaults


class Unsupported(Exception):
    """A combination the engine declares it cannot run (status ``unsupported``, not ``error``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class EngineError(Exception):
    """The engine ran but its result is wrong (e.g. nothing was quantized)."""


# Components a diffusers pipeline may have; the denoiser is "transformer" (DiT) or "unet".
DENOISERS = ("transformer", "unet")
KNOWN_COMPONENTS = ("transformer", "transformer_2", "unet", "text_encoder", "text_encoder_2", "text_encoder_3",
                    "vae")


class Engine(ABC):
    """One quantization backend. Subclasses are recipes: declarations plus two hooks.

    Class attributes (declarations, readable without instantiating or importing the backend):
      name: registry name, e.g. ``"torchao"``.
      dtypes: weight types in the backend's own vocabulary.
      default_dtype: used when the config leaves ``dtype`` unset.
      components: pipeline components the engine can quantize.
      modes: subset of ("pre", "post").
      requires: import names of the Python packages the engine needs.
      round_trips: its quantized components survive ``.to(device)`` then ``.to("cpu")`` unchanged, so a
        component bound for an offload mode may be quantized on the GPU and handed over on the CPU.
      options: the engine's option schema (a frozen dataclass, see `engines.options`): names, types,
        defaults, meanings and valid ranges; a config may only set what it declares.
    """

    name: ClassVar[str]
    dtypes: ClassVar[tuple[str, ...]]
    default_dtype: ClassVar[str]
    components: ClassVar[tuple[str, ...]] = KNOWN_COMPONENTS
    modes: ClassVar[tuple[str, ...]] = ("post",)
    requires: ClassVar[tuple[str, ...]] = ()
    round_trips: ClassVar[bool] = False
    options: ClassVar[type] = NoOptions
    #: True when the engine leaves weights in the compute dtype (the BF16 reference).
    is_reference: ClassVar[bool] = False

    def __init__(self, dtype: str | None = None, mode: str = "post", options: dict | None = None,
                 compute_dtype: torch.dtype = torch.bfloat16, cache_dir: str | None = None):
        """``options`` are checked against the schema (`ValueError`, one line, on a bad one);
        ``cache_dir`` is where the engine may keep files it derives (conversions), None = its default."""
        self.dtype = dtype or self.default_dtype
        self.mode = mode
        self.compute_dtype = compute_dtype
        self.cache_root = cache_dir
        self.settings: dict[str, Any] = check_options(self.options, options, f"engine '{self.name}'")
        if self.dtype not in self.dtypes:
            raise ValueError(f"engine '{self.name}' does not support dtype '{self.dtype}'; "
                             f"it supports: {', '.join(self.dtypes)}")
        if mode not in self.modes:
            raise Unsupported(f"engine '{self.name}' has no '{mode}' mode (it has: {', '.join(self.modes)})")

    # -- declarations -----------------------------------------------------------------------
    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """Every option with its default."""
        return defaults(cls.options)

    @classmethod
    def missing_packages(cls) -> list[str]:
        """Required packages that are not installed (checked without importing them)."""
        return [pkg for pkg in cls.requires if importlib.util.find_spec(pkg) is None]

    @classmethod
    def package_versions(cls) -> dict[str, str]:
        out = {}
        for pkg in cls.requires:
            dist = _DISTRIBUTIONS.get(pkg, pkg)
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "not installed"
        return out

    # -- hooks ------------------------------------------------------------------------------
    def check_platform(self, device: torch.device) -> None:
        """Raise `Unsupported` if this engine/dtype cannot run on ``device``."""
        missing = self.missing_packages()
        if missing:
            raise Unsupported(f"engine '{self.name}' needs package(s) {missing}; "
                              f"install with: pip install -e '.[{self.name}]'")

    def load_component(self, name: str, cls: type, path: str, **kwargs) -> torch.nn.Module:
        """Pre mode: load component ``name`` quantizing on the way in. Default: from_pretrained
        with ``self.quantization_config(name, cls)``."""
        config = self.quantization_config(name, cls)
        if config is None:
            raise Unsupported(f"engine '{self.name}' has no pre mode for component '{name}'")
        return cls.from_pretrained(path, subfolder=name, quantization_config=config, **kwargs)

    def quantization_config(self, name: str, cls: type) -> Any | None:
        """The diffusers/transformers quantization config for pre mode, or None."""
        return None

    @abstractmethod
    def quantize(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        """Post mode: convert ``module`` (already loaded in the compute dtype); return it."""

    def quantize_onto(self, name: str, module: torch.nn.Module, device: torch.device, budget: int):
        """Post mode for a component too large to visit ``device`` whole: quantize it layer by layer with
        each layer's quantized form landing on ``device`` while those placed there total at most
        ``budget`` bytes (the rest stay where the module is); return it, or None when the engine cannot
        (the caller then quantizes it where it is). Default: None."""
        return None

    @abstractmethod
    def count_quantized(self, module: torch.nn.Module) -> tuple[int, int]:
        """(modules holding quantized weights, modules the engine would target)."""

    def verify(self, name: str, module: torch.nn.Module) -> dict[str, int]:
        """Raise `EngineError` unless the component really holds quantized weights."""
        done, targets = self.count_quantized(module)
        if not self.is_reference and done == 0:
            raise EngineError(f"engine '{self.name}' ({self.dtype}) quantized no module of '{name}' "
                              f"({targets} candidate modules): refusing to report it as quantized")
        return {"quantized_modules": done, "target_modules": targets}

    def report(self) -> dict[str, Any]:
        """What reproduces this engine's part of a run: backend versions and resolved settings."""
        return {"engine": self.name, "dtype": self.dtype, "mode": self.mode,
                "settings": dict(self.settings), "versions": self.package_versions()}

    # -- LoRA (`harness.lora`) ----------------------------------------------------------------
    #: What a LoRA kept beside this engine's layers does to them (the record's ``lora_report.what``).
    lora_adapter_effect: ClassVar[str] = ("kept beside the quantized layer: peft wraps it and adds the LoRA's "
                                          "output; the quantized weights are untouched")

    def check_lora(self, fuse: bool, device: torch.device) -> None:
        """Raise `Unsupported` when this engine (dtype, mode, device) cannot take a LoRA or, with ``fuse``,
        cannot fuse one; asked before anything is loaded. Default: a LoRA beside each layer through peft,
        no fusing (`fuse_refusal`), unless the engine's LoRA module (`LORA_MODULES`) says otherwise."""
        if importlib.util.find_spec("peft") is None:
            raise Unsupported("LoRA loading needs the peft package (pip install peft)")
        hooks = _lora_module(self.name)
        if hooks is not None:
            hooks.check_lora(self, fuse, device)
        elif fuse:
            raise Unsupported(self.fuse_refusal())

    def fuse_refusal(self) -> str:
        """Why this engine does not fuse a LoRA into its weights (the `Unsupported` reason of ``fuse``)."""
        return f"engine '{self.name}' cannot fuse a LoRA into its quantized weights"

    def load_lora(self, pipe, component: str, adapters: list[tuple[str, dict, float]]) -> None:
        """Load every adapter ``(name, state dict keyed for diffusers, weight)`` into ``component`` the way
        diffusers' users do on a quantized model: the model's ``load_lora_adapter`` (peft), then
        ``set_adapters`` with the weights. (FluxPipeline's ``load_lora_weights`` reads every adapted layer's
        ``<layer>.weight`` from the state dict, which SDNQ's and quanto's layers do not store under that name.)"""
        model = getattr(pipe, component)
        for name, state, _ in adapters:
            model.load_lora_adapter(dict(state), adapter_name=name, prefix=component)
        model.set_adapters([a[0] for a in adapters], weights=[a[2] for a in adapters])

    def fuse_lora(self, pipe, component: str, names: list[str]) -> str:
        """Fuse the loaded adapters ``names`` into ``component``'s weights and drop the adapter layers; return
        how: ``fused`` (weights rewritten in their dtype) or ``fused-requantized``. Called only when
        `check_lora` accepted ``fuse``. Default: diffusers' ``fuse_lora`` then ``unload_lora`` (the fused
        weights stay)."""
        model = getattr(pipe, component)
        hooks = _lora_module(self.name)
        if hooks is not None:
            return hooks.fuse_lora(self, model, names)
        model.fuse_lora(lora_scale=1.0, adapter_names=names)
        model.unload_lora()
        return "fused"

    def unload_lora(self, pipe, component: str) -> None:
        """Remove every LoRA from ``component`` (diffusers' ``unload_lora``): adapter layers give back the very
        layer they wrapped."""
        model = getattr(pipe, component)
        hooks = _lora_module(self.name)
        if hooks is not None:
            hooks.unload_lora(self, model)
        else:
            model.unload_lora()

    @classmethod
    def offload_unit(cls, path: str, module: torch.nn.Module) -> str | None:
        """Which placement unit ``module`` belongs to under balanced offload (`harness.offload.balanced`).

        Asked of the modules of a component, parents before children, with ``path`` the module's dotted
        name in the component (``""`` for the component itself). Answers:
          * ``path`` itself: ``module`` is atomic (a quantized layer): it moves with its whole subtree,
            never split from its scales; its children are not asked.
          * another module's path: ``module``'s own tensors move with that module's unit (e.g. a weight
            decompressor holding the scales of the layer whose weight it rebuilds); its children are asked.
          * None: the generic rule of the offloader: ``module``'s own tensors are a unit of their own.
        Asked of every module: it must be cheap and must not import the backend.
        Default: atomic when ``module`` directly holds a tensor subclass (a parameter or buffer whose
        type is not exactly ``torch.Tensor`` / ``nn.Parameter``), else None. Overrides answer for the
        engine's own layer types and defer to this for the rest.
        """
        own = [*module._parameters.values(), *module._buffers.values()]
        if any(t is not None and type(t) not in (torch.Tensor, torch.nn.Parameter) for t in own):
            return path
        return None


#: Engine name -> the module holding its own LoRA handling (functions ``check_lora(engine, fuse, device)``,
#: ``fuse_lora(engine, model, names) -> how`` and ``unload_lora(engine, model)``), imported when a LoRA is used.
LORA_MODULES = {"sdnq": "engines.sdnq.lora"}


def _lora_module(name: str):
    import importlib

    target = LORA_MODULES.get(name)
    return importlib.import_module(target) if target else None


# Import name -> distribution name, where they differ.
_DISTRIBUTIONS = {"optimum": "optimum-quanto", "optimum.quanto": "optimum-quanto"}


def tensor_nbytes(t: torch.Tensor) -> int:
    """Bytes a tensor really stores: tensor subclasses (torchao, quanto) are unflattened into
    their inner tensors, so packed data and scales are counted, not the logical shape."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, torch.nn.Parameter):
        inner_names, _ = t.__tensor_flatten__()
        return sum(tensor_nbytes(getattr(t, n)) for n in inner_names if getattr(t, n) is not None)
    return t.numel() * t.element_size()


def module_nbytes(module: torch.nn.Module, extra: Iterable[torch.Tensor] = ()) -> int:
    """Stored bytes of a module's parameters and buffers (each storage counted once)."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers(), *extra]:
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += tensor_nbytes(t)
        # bitsandbytes keeps its scales beside the packed weight: a quant_state (4-bit) or SCB (int8).
        state = getattr(t, "quant_state", None)
        if state is not None:
            total += _quant_state_nbytes(state)
        scb = getattr(t, "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += scb.numel() * scb.element_size()
    return total


def _quant_state_nbytes(state: Any) -> int:
    total = 0
    for value in vars(state).values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif hasattr(value, "absmax"):  # nested state (double quantization)
            total += _quant_state_nbytes(value)
    return total
