"""Synthetic checkpoints: the published architectures of each model family with random, numerically tame
weights.

An architecture is data: ``conf/architectures/<name>.yaml`` names the diffusers pipeline class, each
component's class (a public diffusers or transformers class) and its published config, and the tokenizers
to build locally. A tiny variant names a ``base`` architecture and the ``overrides`` (merged key by key;
lists are replaced) that shrink it. A synthetic checkpoint is built once (deterministic seed), saved as an
ordinary diffusers folder with locally built tokenizers, and then loaded through the same ``from_pretrained``
path as a real one. Its speed and memory are real; its image "quality" only measures numerical deviation
from BF16.

Tame weights: every Linear / Conv weight is drawn N(0, gain^2 / fan_in) with zero biases, so each layer
roughly preserves activation scale (a trained network's activations do not explode, and quantization error
must not drown in chaos); other free parameters (learned tokens, modulation tables) are drawn
N(0, 1 / width), norm scales stay at their constructors' values. Checked by a test: BF16 vs FP32 denoiser outputs agree.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch

#: Bump when the construction below changes: it is part of the cache key.
SYNTHETIC_VERSION = 2
SEED = 20241121


@dataclass(frozen=True)
class Architecture:
    """One synthetic architecture, as its data file describes it (every ``base`` resolved)."""

    name: str
    family: str
    #: The diffusers pipeline class that runs it.
    pipeline: str
    #: Component name -> "diffusers.Class" / "transformers.Class" (models and the scheduler).
    classes: dict[str, str] = field(default_factory=dict)
    #: Component name -> its published config (constructor keyword arguments; transformers: config fields).
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Tokenizer name -> {kind: clip | t5 | bytes, max_length, class (bytes), chat (bytes: a chat template)}.
    tokenizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Extra keyword arguments of the pipeline's constructor (registered in its model_index.json).
    pipeline_config: dict[str, Any] = field(default_factory=dict)
    #: The published repository the configs are written from.
    source: str = ""

    def fingerprint(self) -> str:
        blob = json.dumps({"v": SYNTHETIC_VERSION, "seed": SEED, "family": self.family, "pipeline": self.pipeline,
                           "classes": self.classes, "components": self.components, "tokenizers": self.tokenizers,
                           "pipeline_config": self.pipeline_config}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def modules(self) -> list[str]:
        """The components that are torch modules (every class but the scheduler), in name order."""
        return sorted(n for n, c in self.classes.items() if not _is_scheduler(c))


def _is_scheduler(qualified: str) -> bool:
    return qualified.startswith("diffusers.") and qualified.endswith("Scheduler")


# --- architecture data -----------------------------------------------------------------------------

def architectures_dir() -> Path:
    from harness.paths import conf_dir

    return Path(conf_dir()) / "architectures"


def merge(base: Mapping, overrides: Mapping) -> dict:
    """``base`` with ``overrides`` applied: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve(name: str, raw: dict[str, dict], seen: tuple[str, ...] = ()) -> dict:
    if name in seen:
        raise ValueError(f"architecture {name!r}: 'base' chain loops ({' -> '.join(seen + (name,))})")
    data = raw[name]
    if "base" not in data:
        return data
    if data["base"] not in raw:
        raise ValueError(f"architecture {name!r}: base {data['base']!r} is not in {architectures_dir()}")
    resolved = merge(_resolve(data["base"], raw, seen + (name,)), data.get("overrides") or {})
    resolved["source"] = data.get("source", resolved.get("source", ""))
    return resolved


@lru_cache(maxsize=1)
def _load_all() -> dict[str, Architecture]:
    import yaml

    raw = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(architectures_dir().glob("*.yaml"))}
    out = {}
    for name in raw:
        d = _resolve(name, raw)
        out[name] = Architecture(name=name, family=d["family"], pipeline=d["pipeline"], classes=d["classes"],
                                 components=d["components"], tokenizers=d.get("tokenizers") or {},
                                 pipeline_config=d.get("pipeline_config") or {}, source=d.get("source", ""))
    return out


class _Architectures(Mapping):
    """Name -> `Architecture`, read from ``conf/architectures/`` on first use."""

    def __getitem__(self, name: str) -> Architecture:
        return _load_all()[name]

    def __iter__(self):
        return iter(_load_all())

    def __len__(self) -> int:
        return len(_load_all())


ARCHITECTURES: Mapping[str, Architecture] = _Architectures()


def component_class(qualified: str) -> type:
    """The class "diffusers.X" / "transformers.X" names (a public class of one of those libraries only)."""
    from harness import checkpoint

    library, _, class_name = qualified.partition(".")
    return checkpoint.component_class(library, class_name)


def pipeline_class(name: str):
    """The diffusers pipeline class called ``name``, or the pipeline of the architectures of family ``name``."""
    from harness import checkpoint

    pipelines = {a.family: a.pipeline for a in ARCHITECTURES.values()}
    return checkpoint.component_class("diffusers", pipelines.get(name, name))


# --- tokenizers, built locally -------------------------------------------------------------------

def _byte_symbols() -> list[str]:
    """The 256 printable symbols byte-level BPE uses for raw bytes (GPT-2/CLIP convention)."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, shift = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + shift))
            shift += 1
    return out


def clip_tokenizer(max_length: int = 77):
    """A character-level CLIP tokenizer (byte symbols, no merges): ids stay below 520."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    symbols = _byte_symbols()
    for suffix in ("", "</w>"):
        for s in symbols:
            vocab[s + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer(max_length: int = 512):
    """A character-level T5 (unigram) tokenizer: ids stay below 120."""
    from transformers import T5TokenizerFast

    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()/&+"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)] + [(c, -2.0) for c in chars]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=max_length)


#: A chat template for byte tokenizers of chat text encoders: each message as ``<|im_start|>role\ntext<|im_end|>``
#: (content a string or a list of ``{"type": "text", "text": ...}`` parts).
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}"
                 "{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
                 "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
#: Special tokens of byte tokenizers, after the 256 byte symbols: ids 256, 257, 258.
BYTE_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def byte_tokenizer(class_name: str = "transformers.Qwen2Tokenizer", max_length: int = 512, chat: bool = False):
    """A byte-level BPE tokenizer without merges (one id per UTF-8 byte, ids < 259) of class ``class_name``
    (a transformers tokenizer built from ``vocab`` and ``merges``: Qwen2Tokenizer); ``chat`` adds
    `CHAT_TEMPLATE`."""
    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    for special in BYTE_SPECIALS:
        vocab[special] = len(vocab)
    tok = component_class(class_name)(vocab=vocab, merges=[], model_max_length=max_length)
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tokenizer(spec: Mapping[str, Any]):
    """The tokenizer a data file's ``tokenizers`` entry describes."""
    kind, max_length = spec["kind"], spec["max_length"]
    if kind == "clip":
        return clip_tokenizer(max_length)
    if kind == "t5":
        return t5_tokenizer(max_length)
    if kind == "bytes":
        return byte_tokenizer(spec.get("class", "transformers.Qwen2Tokenizer"), max_length,
                              bool(spec.get("chat")))
    raise ValueError(f"unknown tokenizer kind {kind!r} (clip, t5, bytes)")


# --- weights ------------------------------------------------------------------------------------

#: Linear layers that read a sinusoidal timestep/guidance embedding ([sin | cos] or [cos | sin] halves).
_SINUSOID_READERS = ("timestep_embedder.linear_1", "guidance_embedder.linear_1", "time_embedding.linear_1",
                     "time_embedder.linear_1", "t_embedder.mlp.0")
#: Highest sinusoid frequency (radians per unit of t*1000) a synthetic model listens to. In BF16, t*1000
#: and guidance*1000 are rounded by up to 16 units, which scrambles the phase of faster sinusoids; a
#: trained model is smooth in t, so the synthetic one damps them instead of amplifying that noise.
_MAX_TIME_FREQUENCY = 0.003
_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
#: Modules whose parameters keep the values their constructors give (scales of one, shifts of zero).
_NORMS = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm, torch.nn.modules.batchnorm._NormBase)


@torch.no_grad()
def tame_init_(module: torch.nn.Module, gain: float = 1.0, generator: torch.Generator | None = None) -> None:
    """Re-draw every Linear / Conv / Embedding weight so activations keep their scale; other free
    parameters of non-norm modules (learned tokens, modulation tables) N(0, 1 / width), deterministic
    whatever their constructor left in them; norm layers' parameters (and constant vectors) as constructed."""
    for name, m in module.named_modules():
        if isinstance(m, _LAYERS):
            fan_in = m.weight[0].numel()
            _normal_(m.weight, gain / math.sqrt(fan_in), generator)
            if m.bias is not None:
                m.bias.zero_()
            if name.endswith(_SINUSOID_READERS) and isinstance(m, torch.nn.Linear):
                m.weight.mul_(_sinusoid_damping(m.weight.shape[1]).to(m.weight))
        elif isinstance(m, torch.nn.Embedding):
            _normal_(m.weight, 1.0, generator)
        elif not isinstance(m, _NORMS) and "norm" not in type(m).__name__.lower():
            for p in m.parameters(recurse=False):
                if p.dtype.is_floating_point and not _is_constant_vector(p):
                    _normal_(p, 1.0 / math.sqrt(p.shape[-1] if p.ndim else 1), generator)


def _is_constant_vector(p: torch.Tensor) -> bool:
    """A per-channel scale or shift its constructor set on purpose (all ones or all zeros)."""
    return p.ndim <= 1 and bool(((p == 1).all() or (p == 0).all()).item())


def _sinusoid_damping(width: int) -> torch.Tensor:
    """Per-input-column weights 1 / (1 + (f / f_max)^2) for diffusers' Timesteps frequencies."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    damp = 1.0 / (1.0 + (freqs / _MAX_TIME_FREQUENCY) ** 2)
    # Renormalise so the surviving columns keep the layer's output scale.
    damp = damp / damp.square().mean().sqrt()
    return torch.cat([damp, damp])


def _normal_(t: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    # Draw in float32 on the tensor's device, then cast: same numbers for bf16 and fp32 builds.
    t.copy_(torch.randn(t.shape, generator=generator, device=t.device, dtype=torch.float32) * std)


def instantiate(qualified: str, config: Mapping[str, Any]):
    """One component from its class and published config: a diffusers model or scheduler through
    ``from_config``, a transformers model through its ``config_class`` (nested sub-configs included)."""
    cls = component_class(qualified)
    if qualified.startswith("diffusers."):
        return cls.from_config(dict(config))
    return cls(cls.config_class(**copy.deepcopy(dict(config))))


def build_components(arch: Architecture, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.bfloat16) -> dict[str, Any]:
    """Instantiate every pipeline component of ``arch`` with tame random weights, and its tokenizers."""
    gen = torch.Generator(device=device).manual_seed(SEED)
    out: dict[str, Any] = {name: build_tokenizer(spec) for name, spec in arch.tokenizers.items()}
    for name, qualified in arch.classes.items():
        if _is_scheduler(qualified):
            out[name] = instantiate(qualified, arch.components.get(name, {}))
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        for name in arch.modules():
            with torch.device(device):
                module = instantiate(arch.classes[name], arch.components.get(name, {}))
            tame_init_(module, generator=gen)
            out[name] = _cast(module, dtype).eval()
    finally:
        torch.set_default_dtype(previous)
    return out


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` in ``dtype``, except the submodules a diffusers model keeps in float32
    (``_keep_in_fp32_modules``), stored as ``from_pretrained(torch_dtype=dtype)`` would hold them."""
    module.to(dtype)
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    if keep and dtype != torch.float32:
        for name, sub in module.named_modules():
            if any(part in keep for part in name.split(".")):
                sub.to(torch.float32)
    return module


def build_pipeline(arch: Architecture, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16):
    """The pipeline of ``arch`` with tame random weights, in memory; components its class declares but the
    architecture leaves out (optional encoders, a second expert) are None."""
    import inspect

    cls = pipeline_class(arch.pipeline)
    components = build_components(arch, device=device, dtype=dtype)
    params = inspect.signature(cls.__init__).parameters
    for name, p in params.items():
        if name != "self" and name not in components and name not in arch.pipeline_config \
                and p.default is inspect.Parameter.empty:
            components[name] = None
    return cls(**components, **arch.pipeline_config)


def checkpoint_dir(name: str, cache_dir: str | os.PathLike) -> Path:
    arch = ARCHITECTURES[name]
    return Path(cache_dir) / "synthetic" / f"{name}-{arch.fingerprint()}"


def ensure_checkpoint(name: str, cache_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Path:
    """Return the folder of synthetic checkpoint ``name``, building and saving it once if absent.

    Built into a temporary folder beside the target and renamed into place, so a crash mid-save never
    leaves a half-written checkpoint that later runs would load."""
    if name not in ARCHITECTURES:
        raise KeyError(name)
    target = checkpoint_dir(name, cache_dir)
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    arch = ARCHITECTURES[name]
    pipe = build_pipeline(arch, device=device)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "synthetic.json").write_text(json.dumps(
            {"synthetic": True, "architecture": name, "source": arch.source, "fingerprint": arch.fingerprint(),
             "seed": SEED, "rng_device": torch.device(device).type,  # the same seed draws other numbers on CUDA
             "note": "random weights: image quality columns measure numerical deviation only"}, indent=1))
        del pipe
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first
            if not (target / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
