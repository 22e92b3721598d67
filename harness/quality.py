"""Image quality against the BF16 reference: PSNR, SSIM, MS-SSIM, LPIPS, CLIP score.

Protocol (as in the SVDQuant / deepcompressor evaluations): images compared at full resolution, as
saved (8-bit), scaled to [0, 1]. PSNR is computed per image and averaged. LPIPS (AlexNet, v0.1
linear layers) and CLIP score (a local CLIP model) need pretrained weights: they are computed only
when the weights are on disk, and otherwise the metric is null with an "unavailable" reason - never a
number from random weights. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet weights, as cached by torch hub
MS_SSIM_MIN_SIDE = 161  # 5 scales with an 11-px kernel: (11 - 1) * 2**4 < side


def _float(images: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([im.float() / 255.0 for im in images])


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return [float("inf") if m == 0 else float(10 * torch.log10(1.0 / m)) for m in mse]


def compare(images: list[torch.Tensor], reference: list[torch.Tensor], texts: list[str], cfg: dict,
            device: torch.device | str = "cpu") -> dict:
    """Quality block of a result record. ``images`` / ``reference``: uint8 (C, H, W), same order;
    ``texts``: the prompt of each image (for the CLIP score). The metrics run on ``device`` (the cell's:
    on a GPU, SSIM and MS-SSIM of 1024-pixel images take milliseconds instead of a second)."""
    from torchmetrics.functional.image import (multiscale_structural_similarity_index_measure,
                                               structural_similarity_index_measure)

    a, b = _float(images).to(device), _float(reference).to(device)
    out: dict = {"psnr_db": None, "ssim": None, "ms_ssim": None, "lpips": None, "clip_score": None,
                 "unavailable": {}}
    if cfg.get("psnr", True):
        values = psnr_per_image(a, b)
        finite = [v for v in values if v != float("inf")]
        if finite:
            out["psnr_db"] = sum(finite) / len(finite)
        else:
            out["unavailable"]["psnr_db"] = "identical to the reference (infinite PSNR)"
        out["psnr_db_per_image"] = [None if v == float("inf") else v for v in values]
    if cfg.get("ssim", True):
        out["ssim"] = float(structural_similarity_index_measure(a, b, data_range=1.0))
    if cfg.get("ms_ssim", True):
        if min(a.shape[-2:]) >= MS_SSIM_MIN_SIDE:
            out["ms_ssim"] = float(multiscale_structural_similarity_index_measure(a, b, data_range=1.0))
        else:
            out["unavailable"]["ms_ssim"] = (f"image side {min(a.shape[-2:])} px is below the {MS_SSIM_MIN_SIDE} px "
                                             "that 5-scale MS-SSIM needs")
    if cfg.get("lpips", True):
        try:
            out["lpips"] = lpips_distance(a, b, cfg)
        except WeightsUnavailable as exc:
            out["unavailable"]["lpips"] = str(exc)
    if cfg.get("clip", True):
        try:
            out["clip_score"] = clip_score(a, texts, cfg)
        except WeightsUnavailable as exc:
            out["unavailable"]["clip_score"] = str(exc)
    return out


class WeightsUnavailable(RuntimeError):
    """Pretrained weights a metric needs are not on disk."""


#: LPIPS v0.1 (AlexNet) linear layers: one 1x1 convolution per AlexNet stage, its channels.
LPIPS_LINEAR_CHANNELS = (64, 192, 384, 256, 256)


def lpips_linear_problem(path: Path) -> str | None:
    """Why ``path`` is not an LPIPS v0.1 AlexNet linear-layer file (a tensors-only torch file holding
    ``lin{i}.model.1.weight`` of shape (1, C, 1, 1) for each stage), or None when it is one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure: not such a file
        return f"{path} is not a torch tensors file ({type(exc).__name__})"
    if not isinstance(state, dict):
        return f"{path} does not hold a state dict"
    for i, channels in enumerate(LPIPS_LINEAR_CHANNELS):
        t = state.get(f"lin{i}.model.1.weight")
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (1, channels, 1, 1):
            return f"{path} does not hold LPIPS v0.1 AlexNet linear layers (lin{i}.model.1.weight: 1x{channels}x1x1)"
    return None


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def lpips_model(cfg: dict):
    """LPIPS(alex, v0.1) built only from local files: the AlexNet backbone from ``lpips_alexnet_path``
    or the torch hub cache, the linear layers from ``lpips_linear_path`` or the lpips package."""
    try:
        import lpips
    except ImportError:
        raise WeightsUnavailable("lpips package not installed (pip install -e '.[metrics]')") from None
    import torchvision

    alex = Path(cfg.get("lpips_alexnet_path") or _torch_hub_checkpoints() / ALEXNET_FILE)
    if not alex.is_file():
        raise WeightsUnavailable(f"AlexNet weights not on disk (looked for {alex}); set "
                                 "metrics.lpips_alexnet_path to a local copy")
    linear = Path(cfg.get("lpips_linear_path") or Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth")
    if not linear.is_file():
        raise WeightsUnavailable(f"LPIPS v0.1 linear weights not on disk (looked for {linear})")
    problem = lpips_linear_problem(linear)
    if problem:
        raise WeightsUnavailable(problem)
    model = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    backbone = torchvision.models.alexnet()
    state = torch.load(alex, map_location="cpu", weights_only=True)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    if len(features) != len(backbone.features.state_dict()):
        raise WeightsUnavailable(f"{alex} does not hold AlexNet's convolutional weights (features.*)")
    backbone.load_state_dict(features, strict=False)
    # lpips' AlexNet wrapper slices torchvision's `features` into five stages, in order.
    stages = [model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5]
    ours = [m for s in stages for m in s]
    for dst, src in zip(ours, backbone.features):
        dst.load_state_dict(src.state_dict())
    model.load_state_dict(torch.load(linear, map_location="cpu", weights_only=True), strict=False)
    return model.eval()


@torch.no_grad()
def lpips_distance(a: torch.Tensor, b: torch.Tensor, cfg: dict) -> float:
    model = lpips_model(cfg)
    return float(model(a * 2 - 1, b * 2 - 1).mean())


@torch.no_grad()
def clip_score(images: torch.Tensor, texts: list[str], cfg: dict) -> float:
    """Mean CLIP score, torchmetrics' definition: 100 * max(cos(image embedding, text embedding), 0).

    Computed with transformers directly: torchmetrics 1.9's CLIPScore only accepts hub names and breaks
    on transformers 5 (``get_image_features`` returns an output object there)."""
    from transformers import CLIPModel, CLIPProcessor

    folder = _local_model_folder(cfg.get("clip_model") or "")
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()
        processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a folder that is no usable CLIP model: the metric is unavailable
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise WeightsUnavailable(f"CLIP model folder {folder} could not be loaded (safetensors weights only): "
                                 f"{type(exc).__name__}: {first}") from None
    pixels = processor(images=[(im * 255).round().to(torch.uint8) for im in images], return_tensors="pt")
    tokens = processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
    image_emb = _embedding(model.get_image_features(pixel_values=pixels["pixel_values"]))
    text_emb = _embedding(model.get_text_features(input_ids=tokens["input_ids"],
                                                  attention_mask=tokens["attention_mask"]))
    cos = torch.nn.functional.cosine_similarity(image_emb, text_emb, dim=-1)
    return float((100 * cos.clamp(min=0)).mean())


def _embedding(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _local_model_folder(source: str) -> Path:
    path = Path(source).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if source.count("/") == 1 and not path.exists():
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(source, local_files_only=True))
        except Exception:  # noqa: BLE001
            pass
    raise WeightsUnavailable(f"CLIP model {source!r} not on disk (not a local folder, not in the Hugging Face "
                             "cache); set metrics.clip_model to a local folder")
