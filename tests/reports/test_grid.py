from pathlib import Path

import torch
from PIL import Image

from reports import grid
from tests.reports import samples


def test_one_grid_per_model_and_image_with_bf16_first(tmp_path):
    grids = grid.render(samples.leaderboard(tmp_path / "runs"), tmp_path / "grids", tile=64)
    assert sorted((g.model, g.image) for g in grids) == [("flux-dev", "image_p0_s0"), ("flux-dev", "image_p1_s0"),
                                                         ("sdxl", "image_p0_s0"), ("sdxl", "image_p1_s0")]
    flux = next(g for g in grids if g.model == "flux-dev" and g.image == "image_p0_s0")
    # BF16 first, then every ok cell with images; the oom cell has no tile.
    assert flux.tiles == ["BF16 (reference)", "torchao:int4", "torchao:int8"]
    assert flux.path.name == "flux-dev__NVIDIA-H200__image_p0_s0.png"
    with Image.open(flux.path) as img:
        rgb = img.convert("RGB")
    # The tiles are the images: BF16's red and int8's green are both in the grid, side by side.
    colours = {c for _, c in rgb.getcolors(maxcolors=1 << 20)}
    assert (200, 30, 30) in colours and (30, 200, 30) in colours and (30, 30, 200) in colours
    assert rgb.width >= 3 * 64


def test_missing_reference_pngs_fall_back_to_the_cached_reference(tmp_path):
    records = samples.leaderboard(tmp_path / "runs")[:2]
    for path in records[0]["images"]:
        Path(path).unlink()
    cache = tmp_path / "cache"
    (cache / "reference" / "refkey").mkdir(parents=True)
    cached = torch.zeros(2, 3, 48, 64, dtype=torch.uint8)
    cached[0, 2] = 250  # prompt 0: blue
    torch.save(cached, cache / "reference" / "refkey" / "images.pt")
    for r in records:
        r["config"] = {"run": {"cache_dir": str(cache)}}
    grids = grid.render(records, tmp_path / "grids", tile=64)
    with Image.open(next(g.path for g in grids if g.image == "image_p0_s0")) as img:
        colours = {c for _, c in img.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert (0, 0, 250) in colours


def test_no_ok_cells_no_grid(tmp_path):
    records = [samples.record("bnb", "nf4", "oom", error="boom")]
    assert grid.render(records, tmp_path) == []
