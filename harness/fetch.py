"""Putting weights where a run reads them: downloads into the Hugging Face cache and the torch hub cache, and
copies of local files into the same places (`harness.prepare` decides what and where). The run itself never
calls this module: it only reads.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

#: torchvision's AlexNet ImageNet weights (``AlexNet_Weights.IMAGENET1K_V1``): the file name torch hub caches
#: them under ends in the first hex digits of their SHA-256.
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_SHA256_PREFIX = "7be5be79"
#: Files of a repo that no diffusers / transformers load of PyTorch weights reads.
SKIPPED_SUFFIXES = (".onnx", ".onnx_data", ".msgpack", ".h5", ".tflite", ".ot", ".md", ".png", ".jpg", ".jpeg",
                    ".gif", ".webp", ".mp4", ".gitattributes")
#: Infixes of weight variants (``diffusion_pytorch_model.fp16.safetensors``): a load without ``variant`` skips them.
VARIANTS = (".fp16.", ".fp16-", ".bf16.", ".bf16-", ".fp32.", ".non_ema.", ".ema.")


def hf_cache() -> Path:
    """The Hugging Face cache a run's offline lookups read (``HF_HUB_CACHE`` / ``HF_HOME``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def alexnet(target: Path) -> Path:
    """Download torchvision's AlexNet weights to ``target`` as torch hub does (progress bar, SHA-256 prefix
    checked, written to a temporary file and moved: a broken download leaves nothing at ``target``)."""
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(ALEXNET_URL, str(target), hash_prefix=ALEXNET_SHA256_PREFIX, progress=True)
    return target


def repo(repo_id: str, pipeline: bool) -> Path:
    """Download the files of ``repo_id``'s main revision that a load reads (`select`) into the Hugging Face
    cache, laid out as ``snapshot_download`` lays it out (blobs, ``snapshots/<commit>``, ``refs/main``); return
    the snapshot folder. One progress bar over the files, and huggingface_hub's over each file's bytes.

    File by file (``hf_hub_download``), the first at ``main`` and the rest at the commit it resolved to: a
    ``snapshot_download`` restricted to some files records the repo's whole file list beside them, and the
    run's offline lookup (``snapshot_download(local_files_only=True)``) then refuses the snapshot as incomplete."""
    from huggingface_hub import HfApi, hf_hub_download
    from tqdm import tqdm

    info = HfApi().repo_info(repo_id, revision="main")
    wanted = select([s.rfilename for s in info.siblings or []], pipeline)
    if not wanted:
        raise ValueError(f"{repo_id} has no files a load reads")
    revision, snapshot = "main", None
    for name in tqdm(wanted, desc=repo_id, unit="file", file=sys.stderr):
        path = Path(hf_hub_download(repo_id, name, revision=revision))
        if snapshot is None:
            snapshot = path.parents[len(Path(name).parts) - 1]
            revision = snapshot.name
    return snapshot


def select(files: list[str], pipeline: bool) -> list[str]:
    """The files of a repo that a PyTorch load reads, in the given order: not other frameworks' weights,
    documents or media, not weight variants (`VARIANTS`), no ``.bin`` weights beside ``.safetensors`` ones in
    the same folder; for a diffusers ``pipeline`` only ``model_index.json`` and the component folders (a
    root-level single-file checkpoint is not what ``from_pretrained`` reads)."""
    def folder(path: str) -> str:
        return path.rpartition("/")[0]

    with_safetensors = {folder(f) for f in files if f.endswith(".safetensors")}
    out = []
    for f in files:
        name = f.rpartition("/")[2]
        if f.lower().endswith(SKIPPED_SUFFIXES) or any(v in name for v in VARIANTS) or name.startswith("openvino"):
            continue
        if f.endswith(".bin") and folder(f) in with_safetensors:
            continue
        if pipeline and "/" not in f and f != "model_index.json":
            continue
        out.append(f)
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_file(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` (beside it first, then renamed: never a partial file at ``target``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    copy([(source, tmp)])
    os.replace(tmp, target)
    return target


def install_snapshot(repo_id: str, source: Path) -> Path:
    """Copy the folder ``source`` into the Hugging Face cache as the main revision of ``repo_id``, where
    ``snapshot_download(repo_id, local_files_only=True)`` finds it: ``snapshots/<revision>`` (the revision a
    hash of the file list and sizes; copied beside it first, then renamed) and ``refs/main`` naming it."""
    from huggingface_hub.file_download import repo_folder_name

    storage = hf_cache() / repo_folder_name(repo_id=repo_id, repo_type="model")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    listing = "\n".join(f"{p.relative_to(source).as_posix()} {p.stat().st_size}" for p in files)
    revision = hashlib.sha1(listing.encode()).hexdigest()  # noqa: S324 - a 40-hex name, as a commit's
    snapshot = storage / "snapshots" / revision
    if not snapshot.is_dir():
        (storage / "snapshots").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".install-", dir=storage / "snapshots"))
        copy([(p, tmp / p.relative_to(source)) for p in files])
        os.replace(tmp, snapshot)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    ref = storage / "refs" / ".main.partial"
    ref.write_text(revision)
    os.replace(ref, storage / "refs" / "main")
    return snapshot


def copy(pairs: list[tuple[Path, Path]]) -> None:
    """Copy each (source, destination) file, with one progress bar over all their bytes."""
    from tqdm import tqdm

    total = sum(src.stat().st_size for src, _ in pairs)
    with tqdm(total=total, unit="B", unit_scale=True, desc="copying", file=sys.stderr) as bar:
        for src, dst in pairs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                for block in iter(lambda: fin.read(1 << 22), b""):
                    fout.write(block)
                    bar.update(len(block))
            shutil.copystat(src, dst)


def why(exc: BaseException) -> str:
    """One line for a failed download, with the fix where there is a known one."""
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, GatedRepoError):
        return (f"the repo is gated ({first}): accept its licence on its Hugging Face page, then log in "
                "(hf auth login, or set HF_TOKEN)")
    if isinstance(exc, RepositoryNotFoundError):
        return f"no such repo, or it is private ({first}): check the id, or log in (hf auth login / HF_TOKEN)"
    if isinstance(exc, OfflineModeIsEnabled) or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true"):
        return "HF_HUB_OFFLINE is set, so nothing is downloaded: unset it, or --install your copy"
    return f"{type(exc).__name__}: {first}"
