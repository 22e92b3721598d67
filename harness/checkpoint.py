"""Finding and checking a diffusers checkpoint folder, offline: nothing is ever downloaded."""
from __future__ import annotations

import json
import struct
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint path that is missing, not a diffusers pipeline, or corrupt."""


#: The only libraries a checkpoint's ``model_index.json`` may name: its classes are looked up in these
#: packages' public namespaces, never imported from a module the checkpoint names.
LIBRARIES = ("diffusers", "transformers")


def check_component(library, class_name) -> None:
    """`CheckpointError` unless a ``model_index.json`` entry names a public class of diffusers or transformers.
    Looked up in the library's namespace listing: nothing is imported on the checkpoint's say-so."""
    if (library not in LIBRARIES or not isinstance(class_name, str) or not class_name.isidentifier()
            or class_name.startswith("_")):
        raise CheckpointError(f"model_index.json names {library}.{class_name}: only classes of "
                              f"{' and '.join(LIBRARIES)} are loaded (a checkpoint never runs its own code)")
    import importlib

    if class_name not in dir(importlib.import_module(library)):
        raise CheckpointError(f"model_index.json names {library}.{class_name}, which {library} does not have")


def is_pipeline_name(name) -> bool:
    """True when ``name`` is a public diffusers pipeline class, read from diffusers' export table: nothing
    is imported (importing a pipeline imports every quantization backend it supports)."""
    import diffusers

    exported = getattr(diffusers, "_import_structure", {}).get("pipelines", [])
    return isinstance(name, str) and not name.startswith("_") and name in exported and name.endswith("Pipeline")


def component_class(library, class_name) -> type:
    """The class a ``model_index.json`` entry names, once `check_component` accepts it."""
    import importlib

    check_component(library, class_name)
    cls = getattr(importlib.import_module(library), class_name, None)
    if not isinstance(cls, type):
        raise CheckpointError(f"model_index.json names {library}.{class_name}, which is not a class")
    return cls


def module_components(index: dict) -> list[str]:
    """The components of a checked ``model_index.json`` that are torch modules (models, text encoders; not
    tokenizers, schedulers or processors), in name order."""
    import torch

    out = []
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or None in entry:
            continue
        if issubclass(component_class(*entry), torch.nn.Module):
            out.append(name)
    return sorted(out)


def resolve(path_or_repo: str) -> Path:
    """A local folder, or a Hugging Face repo id already in the local cache (offline lookup)."""
    path = Path(path_or_repo).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"model.path {path_or_repo!r} is a file; expected a diffusers pipeline folder "
                                  "(with model_index.json)")
        return path
    if path_or_repo.count("/") == 1 and not path_or_repo.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(path_or_repo, local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - LocalEntryNotFoundError and friends
            raise CheckpointError(
                f"model.path {path_or_repo!r} is not a local folder and is not in the Hugging Face cache "
                f"({type(exc).__name__}); the harness never downloads: point model.path at a local folder, or "
                "leave it null to use the synthetic checkpoint") from None
    raise CheckpointError(f"model.path {path_or_repo!r} does not exist")


#: Weight files that torch / transformers unpickle; never read (`check` refuses a component that has only these).
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})


def check(folder: Path) -> dict:
    """Validate a pipeline folder without loading weights; return its model_index.

    Reads model_index.json and every safetensors header, so a truncated or foreign file is reported
    by name before any run starts; a component whose weights are only pickles is refused (loading reads
    safetensors only)."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise CheckpointError(f"{folder} is not a diffusers pipeline folder: no model_index.json")
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"{index_path} is corrupt: {exc}") from None
    if not isinstance(index, dict):
        raise CheckpointError(f"{index_path} is corrupt: not a JSON object")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[:1] == [None]:
            continue
        if len(entry) != 2 or not all(isinstance(e, str) for e in entry):
            raise CheckpointError(f"{index_path}: component '{name}' is not a [library, class] pair")
        check_component(*entry)
        if not isinstance(name, str) or not name.isidentifier():
            raise CheckpointError(f"{index_path}: component name {name!r} is not an identifier")
        sub = folder / name
        if not sub.is_dir():
            raise CheckpointError(f"{folder}: component '{name}' is listed in model_index.json but its "
                                  f"folder is missing")
        safetensors = sorted(sub.glob("*.safetensors"))
        for weights in safetensors:
            check_safetensors(weights)
        pickled = sorted(p.name for p in sub.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled and not safetensors:
            raise CheckpointError(f"{folder}: component '{name}' has only pickled weights ({', '.join(pickled)}); "
                                  "the harness reads safetensors only, since unpickling can run code: convert "
                                  "them to .safetensors")
    return index


def check_safetensors(path: Path) -> None:
    """Raise `CheckpointError` if ``path`` is not a complete safetensors file."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is corrupt: {size} bytes, too short for a safetensors header")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8 or header_len > 100_000_000:
                raise CheckpointError(f"{path} is corrupt: header length {header_len} exceeds the file")
            header = json.loads(fh.read(header_len))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is corrupt: its safetensors header is not valid JSON") from None
    try:
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, TypeError, IndexError):
        raise CheckpointError(f"{path} is corrupt: its safetensors header is not a table of tensors") from None
    if 8 + header_len + end > size:
        raise CheckpointError(f"{path} is truncated: tensors need {8 + header_len + end} bytes, file has {size}")
