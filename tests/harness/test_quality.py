import math

import pytest
import torch

from harness import quality


def _images(n=2, side=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8) for _ in range(n)]


def test_psnr_is_per_image_then_averaged():
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    b[0] += 0.1  # mse 0.01 -> 20 dB
    b[1] += 0.01  # mse 1e-4 -> 40 dB
    assert quality.psnr_per_image(a, b) == pytest.approx([20.0, 40.0], abs=1e-4)
    out = quality.compare([(x * 255).round().byte() for x in b], [(x * 255).round().byte() for x in a],
                          ["p", "p"], {"lpips": False, "clip": False})
    assert out["psnr_db"] == pytest.approx(sum(out["psnr_db_per_image"]) / 2)


def test_identical_images_have_no_finite_psnr_and_ssim_one():
    imgs = _images()
    out = quality.compare(imgs, imgs, ["p", "p"], {"lpips": False, "clip": False})
    assert out["psnr_db"] is None and "identical" in out["unavailable"]["psnr_db"]
    assert out["ssim"] == pytest.approx(1.0)


def test_ms_ssim_needs_large_images():
    small = quality.compare(_images(side=64), _images(side=64, seed=1), ["p", "p"], {"lpips": False, "clip": False})
    assert small["ms_ssim"] is None and "161" in small["unavailable"]["ms_ssim"]
    big = quality.compare(_images(1, 192), _images(1, 192, seed=1), ["p"], {"lpips": False, "clip": False})
    assert 0 <= big["ms_ssim"] < 1


def test_missing_pretrained_weights_are_reported_not_invented(tmp_path):
    cfg = {"lpips_alexnet_path": str(tmp_path / "none.pth"), "clip_model": str(tmp_path / "no-clip")}
    out = quality.compare(_images(), _images(seed=1), ["p", "p"], cfg)
    assert out["lpips"] is None and "not on disk" in out["unavailable"]["lpips"]
    assert out["clip_score"] is None and "not on disk" in out["unavailable"]["clip_score"]


def test_lpips_loads_local_weight_files(tmp_path):
    import torchvision

    alex = tmp_path / "alexnet.pth"
    torch.manual_seed(0)
    torch.save({f"features.{k}": v for k, v in torchvision.models.alexnet().features.state_dict().items()}, alex)
    cfg = {"lpips_alexnet_path": str(alex), "clip": False}
    a, b = _images(seed=0), _images(seed=1)
    same = quality.compare(a, a, ["p", "p"], cfg)
    diff = quality.compare(a, b, ["p", "p"], cfg)
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert diff["lpips"] > 0 and math.isfinite(diff["lpips"])
    model = quality.lpips_model(cfg)
    assert torch.equal(model.net.slice1[0].weight, torchvision.models.alexnet().features[0].weight) is False
    loaded = torch.load(alex, weights_only=True)["features.0.weight"]
    assert torch.equal(model.net.slice1[0].weight, loaded)


def test_clip_score_with_a_local_model(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from harness.synthetic import clip_tokenizer

    config = CLIPConfig(text_config=dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=1,
                                         bos_token_id=0, pad_token_id=1),
                        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=8),
                        projection_dim=16)
    folder = tmp_path / "tiny-clip"
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=clip_tokenizer(77)).save_pretrained(folder)
    out = quality.compare(_images(), _images(seed=1), ["a fox", "a cat"], {"lpips": False, "clip_model": str(folder)})
    assert out["clip_score"] is not None and "clip_score" not in out["unavailable"]


def test_a_clip_folder_that_does_not_load_makes_the_score_unavailable_not_an_error(tmp_path):
    import pytest
    import torch

    from harness import quality

    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(quality.WeightsUnavailable, match="could not be loaded"):
        quality.clip_score(torch.rand(1, 3, 32, 32), ["a prompt"], {"clip_model": str(folder)})
