import copy
import json

import pytest
import torch

from harness.synthetic import ARCHITECTURES, build_components, checkpoint_dir, clip_tokenizer, ensure_checkpoint, t5_tokenizer


def test_tokenizers_are_local_and_roundtrip(tmp_path):
    clip, t5 = clip_tokenizer(77), t5_tokenizer(32)
    ids = clip("a red fox", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == 0 and max(ids) < 520
    t5_ids = t5("a red fox", padding="max_length", max_length=32, truncation=True).input_ids
    assert len(t5_ids) == 32 and max(t5_ids) < 120
    t5.save_pretrained(tmp_path / "t5")
    assert type(t5).from_pretrained(tmp_path / "t5")("a red fox").input_ids == t5("a red fox").input_ids


def _grid_ids(side):
    """(0, row, col) per latent patch, as FluxPipeline builds them."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float()


def _denoiser_inputs(name, dtype):
    g = torch.Generator().manual_seed(1)
    if name == "flux-tiny":
        return dict(hidden_states=torch.randn(1, 144, 64, generator=g).to(dtype),
                    encoder_hidden_states=torch.randn(1, 32, 32, generator=g).to(dtype),
                    pooled_projections=torch.randn(1, 32, generator=g).to(dtype),
                    timestep=torch.tensor([0.5]), guidance=torch.tensor([3.5]),
                    img_ids=_grid_ids(12), txt_ids=torch.zeros(32, 3))
    return dict(sample=torch.randn(1, 4, 24, 24, generator=g).to(dtype), timestep=torch.tensor([500]),
                encoder_hidden_states=torch.randn(1, 77, 64, generator=g).to(dtype),
                added_cond_kwargs=dict(text_embeds=torch.randn(1, 32, generator=g).to(dtype),
                                       time_ids=torch.tensor([[192.0, 192, 0, 0, 192, 192]]).to(dtype)))


@pytest.mark.parametrize("name", ["flux-tiny", "sdxl-tiny"])
def test_random_weights_are_numerically_tame(name):
    """BF16 and FP32 runs of the synthetic denoiser agree within 5% (quantization error is not chaos)."""
    comps = build_components(ARCHITECTURES[name], dtype=torch.float32)
    fp32 = comps.get("transformer") or comps["unet"]
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    with torch.no_grad():
        ref = fp32(**_denoiser_inputs(name, torch.float32)).sample
        out = bf16(**_denoiser_inputs(name, torch.bfloat16)).sample.float()
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel < 0.05, rel
    assert 0.1 < ref.std().item() < 10  # neither dead nor exploding


def test_checkpoint_is_built_once_and_deterministic(tmp_path):
    first = ensure_checkpoint("flux-tiny", tmp_path / "a")
    assert first == checkpoint_dir("flux-tiny", tmp_path / "a")
    stamp = (first / "model_index.json").stat().st_mtime_ns
    assert ensure_checkpoint("flux-tiny", tmp_path / "a") == first
    assert (first / "model_index.json").stat().st_mtime_ns == stamp  # cached, not rebuilt
    second = ensure_checkpoint("flux-tiny", tmp_path / "b")
    a = (first / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    b = (second / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == b
    assert not [p for p in (tmp_path / "a" / "synthetic").iterdir() if p.name.startswith(".")]  # no temp left
    meta = json.loads((first / "synthetic.json").read_text())
    assert meta["synthetic"] and meta["rng_device"] == "cpu"  # the same seed draws other numbers on CUDA


def test_full_size_configs_match_published_architectures():
    flux = ARCHITECTURES["flux-dev"].components["transformer"]
    assert (flux["num_layers"], flux["num_single_layers"], flux["num_attention_heads"] * flux["attention_head_dim"]) == (19, 38, 3072)
    assert ARCHITECTURES["flux-schnell"].components["transformer"]["guidance_embeds"] is False
    unet = ARCHITECTURES["sdxl"].components["unet"]
    assert unet["block_out_channels"] == [320, 640, 1280] and unet["cross_attention_dim"] == 2048


def test_a_tiny_variant_merges_its_overrides_into_its_base():
    from harness.synthetic import merge

    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    assert merge(base, {"a": {"y": [3]}, "c": 4}) == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 4}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2}  # the base is left as it was
    tiny, full = ARCHITECTURES["flux-tiny"], ARCHITECTURES["flux-dev"]
    assert tiny.classes == full.classes and tiny.components["transformer"]["num_layers"] == 2
    assert tiny.components["vae"]["latent_channels"] == full.components["vae"]["latent_channels"] == 16


def test_byte_tokenizer_ids_are_bytes_and_its_chat_template_renders(tmp_path):
    from harness.synthetic import byte_tokenizer

    tok = byte_tokenizer(max_length=64, chat=True)
    assert tok("a fox").input_ids == list(b"a fox")
    text = tok.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "a fox"}]}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\na fox<|im_end|>\n<|im_start|>assistant\n"
    tok.save_pretrained(tmp_path)
    assert type(tok).from_pretrained(tmp_path)("é").input_ids == list("é".encode())
