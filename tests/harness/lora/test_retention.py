import pytest
import torch

from harness.lora.retention import retention


def _img(value):
    return torch.full((3, 4, 4), value, dtype=torch.uint8)


def test_the_same_change_is_fully_retained():
    found = retention([_img(10)], [_img(30)], [_img(10)], [_img(30)])
    assert found["cosine"] == pytest.approx(1.0) and found["magnitude"] == pytest.approx(1.0)
    assert found["psnr_db"] is None and "psnr_db" in found["unavailable"]


def test_a_lost_change_retains_nothing_and_a_weaker_one_shows_in_magnitude():
    assert retention([_img(10)], [_img(10)], [_img(10)], [_img(30)])["cosine"] == 0.0
    half = retention([_img(10)], [_img(20)], [_img(10)], [_img(30)])
    assert half["magnitude"] == pytest.approx(0.5) and half["cosine"] == pytest.approx(1.0)
    assert half["psnr_db"] == pytest.approx(10 * torch.log10(torch.tensor(1 / (10 / 255) ** 2)).item())


def test_no_bf16_change_makes_retention_unavailable():
    found = retention([_img(10)], [_img(30)], [_img(10)], [_img(10)])
    assert found["cosine"] is None and "all" in found["unavailable"]
