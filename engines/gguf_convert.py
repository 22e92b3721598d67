"""GGUF files for diffusers models: in-house conversion, content-hash cache, validation.

Conversion reads a diffusers component folder (``<model>/transformer``) tensor by tensor from its
safetensors files, quantizes the weight of every ``nn.Linear`` whose input size is a multiple of
the block size with the ``gguf`` package's quantizers, stores every other tensor as F32 (exact for
BF16), and streams the result into a ``.gguf`` file. Tensor names are the diffusers state-dict
names, which ``from_single_file`` loads as they are (no key conversion). The whole model never
sits in memory.

``validate`` turns a truncated, corrupt or foreign file into a ``ValueError`` that names the path
and what is wrong, before diffusers reads it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

#: Bump when the file layout written by `convert` changes (invalidates the cache).
CONVERTER_VERSION = 1
#: In-house conversion: the types the gguf package can quantize.
CONVERTIBLE = ("q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
_HASH_CHUNK = 16 << 20


def qtype(name: str):
    """GGMLQuantizationType for a lower-case name like ``q4_k``."""
    import gguf
    try:
        return gguf.GGMLQuantizationType[name.upper()]
    except KeyError:
        raise ValueError(f"unknown GGUF type '{name}'") from None


def expected_tensors(cls: type, config_dir: str | Path) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """(name -> shape of ``cls``'s state dict, names of its nn.Linear weights), from a model
    built on the meta device from the config in ``config_dir``."""
    from accelerate import init_empty_weights
    config = cls.load_config(str(config_dir))
    with init_empty_weights():
        model = cls.from_config(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return shapes, linear


def _safetensors_files(source: Path) -> list[Path]:
    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{source}: no .safetensors files to convert to GGUF")
    return files


def source_digest(source: Path, memo_dir: Path) -> str:
    """SHA-256 of the component's safetensors files, memoized per (path, size, mtime)."""
    memo_path = memo_dir / "source-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    total = hashlib.sha256()
    changed = False
    for path in _safetensors_files(source):
        stat = path.stat()
        key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if key not in memo:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    digest.update(chunk)
            memo[key] = digest.hexdigest()
            changed = True
        total.update(memo[key].encode())
    if changed:
        memo_dir.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(memo, indent=1))
        os.replace(tmp, memo_path)
    return total.hexdigest()


def cached_convert(cls: type, source: Path, quant: str, cache_dir: Path) -> Path:
    """The converted file for (source content, quant type, converter version); converts once."""
    from importlib.metadata import version
    digest = hashlib.sha256(f"{source_digest(source, cache_dir)}:{quant}:{CONVERTER_VERSION}:"
                            f"gguf-{version('gguf')}".encode()).hexdigest()[:16]
    target = cache_dir / f"{cls.__name__}-{quant}-{digest}.gguf"
    if not target.exists():
        convert(cls, source, target, quant)
    return target


def convert(cls: type, source: Path, target: Path, quant: str) -> Path:
    """Write ``source`` (a diffusers component folder) as a GGUF file of type ``quant``."""
    import gguf
    from safetensors import safe_open

    if quant not in CONVERTIBLE:
        raise ValueError(f"the gguf package cannot quantize to '{quant}'; convertible: {', '.join(CONVERTIBLE)}")
    qt = qtype(quant)
    block, _ = gguf.GGML_QUANT_SIZES[qt]
    shapes, linear = expected_tensors(cls, source)

    plan = []  # (name, file, quantize?)
    for path in _safetensors_files(source):
        with safe_open(str(path), framework="pt") as fh:
            for name in fh.keys():
                shape = tuple(fh.get_slice(name).get_shape())
                quantize = name in linear and len(shape) == 2 and shape[-1] % block == 0
                plan.append((name, path, shape, quantize))
    missing = sorted(set(shapes) - {name for name, *_ in plan})
    if missing:
        raise ValueError(f"{source}: not a complete {cls.__name__} checkpoint (missing e.g. {missing[:3]})")

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    writer = gguf.GGUFWriter(str(partial), arch=cls.__name__.lower())
    writer.add_string("diffusers.class", cls.__name__)
    writer.add_string("diffusers.layout", "diffusers")
    writer.add_uint32("diffusers.converter_version", CONVERTER_VERSION)
    writer.add_string("general.quantization", quant)
    for name, _, shape, quantize in plan:
        if quantize:
            byte_shape = gguf.quant_shape_to_byte_shape(shape, qt)
            writer.add_tensor_info(name, byte_shape, _np_uint8(), int(_prod(byte_shape)), raw_dtype=qt)
        else:
            writer.add_tensor_info(name, shape, _np_float32(), int(_prod(shape)) * 4)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        handles = {path: safe_open(str(path), framework="pt") for path in {p for _, p, _, _ in plan}}

        def encode(item):
            name, path, _, quantize = item
            data = handles[path].get_tensor(name).float().numpy()
            return gguf.quants.quantize(data, qt) if quantize else data

        # numpy releases the GIL: quantize a few tensors ahead on worker threads, write in order.
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            pending = deque()
            for item in plan:
                pending.append(pool.submit(encode, item))
                if len(pending) > 2 * workers:
                    writer.write_tensor_data(pending.popleft().result())
            while pending:
                writer.write_tensor_data(pending.popleft().result())
        writer.close()
        os.replace(partial, target)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
    return target


def validate(path: str | Path, cls: type | None = None, config_dir: str | Path | None = None) -> dict:
    """Check that ``path`` is a complete GGUF file whose tensors diffusers can load into ``cls``.

    Returns {"types": Counter of tensor types by name, "dominant": the quantized type holding the
    most bytes, "layout": "diffusers" | "original"}; raises ValueError naming the path otherwise.
    """
    import gguf
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: GGUF file not found")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # the reader fails in many ways on a cut-off header or data
        raise ValueError(f"{path}: unreadable GGUF file (truncated or corrupt?): {err}") from err
    if not reader.tensors:
        raise ValueError(f"{path}: GGUF file holds no tensors")
    types, nbytes = Counter(), Counter()
    for t in reader.tensors:
        end = t.data_offset + int(t.n_bytes)
        if end > size:
            raise ValueError(f"{path}: truncated: tensor '{t.name}' ends at byte {end}, file has {size} bytes")
        quant = t.tensor_type
        if quant not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) \
                and quant not in SUPPORTED_GGUF_QUANT_TYPES:
            raise ValueError(f"{path}: tensor '{t.name}' has type {quant.name}, which diffusers cannot "
                             f"dequantize (supported: {', '.join(q.name for q in SUPPORTED_GGUF_QUANT_TYPES)})")
        types[quant.name.lower()] += 1
        if quant not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                         gguf.GGMLQuantizationType.BF16):
            nbytes[quant.name.lower()] += int(t.n_bytes)
    info = {"types": types, "dominant": nbytes.most_common(1)[0][0] if nbytes else None, "layout": None}
    if cls is not None and config_dir is not None:
        info["layout"] = _layout(path, {t.name for t in reader.tensors}, cls, config_dir)
    return info


# Key prefixes of original (non-diffusers) single-file layouts diffusers converts itself.
_ORIGINAL_MARKERS = {"FluxTransformer2DModel": "double_blocks.", "UNet2DConditionModel": "input_blocks."}


def _layout(path: Path, names: set[str], cls: type, config_dir) -> str:
    expected, _ = expected_tensors(cls, config_dir)
    if names == set(expected):
        return "diffusers"
    marker = _ORIGINAL_MARKERS.get(cls.__name__)
    if marker and any(marker in n for n in names):
        return "original"
    common = len(names & set(expected))
    extra = sorted(names - set(expected))[:2]
    missing = sorted(set(expected) - names)[:2]
    raise ValueError(f"{path}: holds tensors of a different model, not {cls.__name__}: {common} of "
                     f"{len(expected)} expected names present (unexpected e.g. {extra}, missing e.g. {missing})")


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def _np_uint8():
    import numpy as np
    return np.dtype(np.uint8)


def _np_float32():
    import numpy as np
    return np.dtype(np.float32)
