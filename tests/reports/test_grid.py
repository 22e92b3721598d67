from pathlib import Path

import numpy as np
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


def _difference_cells(tmp_path, colours: dict, sizes: dict | None = None):
    """A BF16 record and one record per other name, each with one constant-colour PNG."""
    records = []
    for name, colour in colours.items():
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        path = folder / "image_p0_s0.png"
        Image.new("RGB", (sizes or {}).get(name, (64, 48)), colour).save(path)
        engine, dtype = ("bf16", "bf16") if name == "bf16" else ("sdnq", name)
        records.append(samples.record(engine, dtype, steps_per_s=1.0, images=[path]))
    return records


def _count(path, colour) -> int:
    with Image.open(path) as img:
        return dict((c, n) for n, c in img.convert("RGB").getcolors(maxcolors=1 << 20)).get(tuple(colour), 0)


def test_difference_row_shows_each_engine_against_bf16_in_one_scale(tmp_path):
    from reports import difference

    # |int8 - BF16| is 10/3 per pixel (one channel off by 10), |uint4 - BF16| 20 (one channel off by 60).
    records = _difference_cells(tmp_path, {"bf16": (100, 100, 100), "int8": (110, 100, 100),
                                           "uint4": (100, 100, 160)})
    (g,) = grid.render(records, tmp_path / "grids", tile=64)
    assert g.difference_scale == 20.0
    area = 64 * 48
    top = difference.colours(np.array([1.0]))[0]
    low = difference.colours(np.array([(10 / 3) / 20]))[0]
    # Each engine's map is one flat colour of the shared scale: uint4 at its top, int8 a sixth of the way.
    assert _count(g.path, top) >= 0.9 * area and _count(g.path, low) >= 0.9 * area
    assert "0 .. bright 20 of 255" in grid.scale_line(g.difference_scale)


def test_an_image_equal_to_bf16_is_black_and_sizes_that_differ_get_no_map(tmp_path):
    from reports import difference

    records = _difference_cells(tmp_path, {"bf16": (90, 90, 90), "int8": (90, 90, 90), "int4": (0, 0, 0)},
                                sizes={"int4": (32, 32)})
    (g,) = grid.render(records, tmp_path / "grids", tile=64)
    assert g.difference_scale == 1.0  # nothing differs: the smallest scale, not a division by zero
    black = difference.colours(np.array([0.0]))[0]
    assert _count(g.path, black) >= 0.9 * 64 * 48
    ref = Image.new("RGB", (64, 48))
    assert difference.of(Image.new("RGB", (32, 32)), ref) is None and difference.of(None, ref) is None


def test_the_scale_is_a_high_percentile_not_one_outlier():
    from reports import difference

    ref = Image.new("RGB", (100, 100), (0, 0, 0))
    img = Image.new("RGB", (100, 100), (3, 3, 3))
    img.putpixel((0, 0), (255, 255, 255))  # one pixel far off
    d = difference.of(img, ref)
    assert d.max == 255 and abs(d.mean - (3 * 9999 + 255) / 10000) < 1e-3
    assert difference.scale([d, None]) == 3.0 and difference.scale([None]) is None


def test_a_lora_cell_differs_from_bf16_with_the_same_lora_and_bf16_with_a_lora_is_no_reference(tmp_path):
    records = _difference_cells(tmp_path, {"bf16": (100, 100, 100), "int8": (100, 100, 100)})
    lora = {"name": "synthetic", "options": {"rank": 16}}
    for name, engine, dtype, colour in (("bf16-lora", "bf16", "bf16", (140, 100, 100)),
                                        ("int8-lora", "sdnq", "int8", (140, 100, 100))):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        path = folder / "image_p0_s0.png"
        Image.new("RGB", (64, 48), colour).save(path)
        records.append({**samples.record(engine, dtype, steps_per_s=1.0, images=[path]), "lora": "synthetic",
                        "config": {"lora": lora}})
    (g,) = grid.render(records, tmp_path / "grids", tile=64)
    assert g.tiles[0] == "BF16 (reference)" and "bf16:bf16 lora=synthetic r16" in g.tiles
    # every map is zero: int8 equals BF16, int8 + LoRA equals BF16 + LoRA (the LoRA's own effect is not shown)
    assert g.difference_scale == 1.0
