"""Image grids like the public quantization comparisons: BF16 beside every engine/dtype for the same
prompt and seed, each tile labelled with memory, speed and PSNR / LPIPS, and under every row of images its
difference row: each engine's |engine - BF16| per pixel (`reports.difference`), in one colour scale for the
whole grid, whose key sits under the BF16 tile and whose range the header prints. On synthetic weights the
images are noise and the difference is all there is to see.

One PNG per (model, device, image): ``grids/<model>__<device>__<image>.png``. Images come from the
records' ``images`` (PNG paths); the BF16 tile from the reference cell's record, or, when its PNGs are
gone, from the cached reference tensor (``run.cache_dir/reference/<key>/images.pt``).
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from reports import difference, provenance
from reports.records import groups, is_lora_reference, is_reference, label

TILE = 256
COLUMNS = 6
PAD = 8
LABEL_LINES = 3


@dataclass
class Grid:
    path: Path
    model: str
    device: str
    image: str
    #: Labels of the tiles, BF16 first.
    tiles: list[str]
    #: Top of the difference row's colour scale (of 255, `reports.difference.scale`); None without a map.
    difference_scale: float | None = None


def render(records: list[dict], out_dir: str | Path, tile: int = TILE) -> list[Grid]:
    """Write one grid PNG per (model, device, prompt x seed image) into ``out_dir``; return them."""
    out = Path(out_dir)
    grids = []
    for (model, device), group in groups(records).items():
        ok = [r for r in group if r.get("status") == "ok"]
        refs = [r for r in ok if is_reference(r)]
        ref = refs[-1] if refs else None
        others = sorted((r for r in ok if not is_reference(r) and r.get("images")),
                        key=label)
        names = _image_names(ref, others)
        if not names or not (ref or others):
            continue
        ref_images = _reference_images(ref, others, names)
        from harness.console import lora_label

        lora_refs = {lora_label(r): r for r in ok if is_lora_reference(r)}
        for name in names:
            reference = ref_images.get(name)
            tiles = [("BF16 (reference)", _reference_caption(ref), reference)]
            tiles += [(label(r), _caption(r), _open(_find(r, name))) for r in others]
            # a cell with a LoRA differs from BF16 with the same LoRA (else the LoRA's own effect would show)
            bases = [_open(_find(lora_refs[lora_label(r)], name)) if lora_label(r) in lora_refs else reference
                     for r in others]
            maps = [difference.of(image, base) for (_, _, image), base in zip(tiles[1:], bases)]
            top = difference.scale(maps)
            path = out / f"{slug(model)}__{slug(device)}__{Path(name).stem}.png"
            _draw(tiles, maps, top, path, tile, title=f"{model} on {device}: {Path(name).stem}", group=group)
            grids.append(Grid(path, model, device, Path(name).stem, [t[0] for t in tiles], top))
    return grids


def _image_names(ref: dict | None, others: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for r in ([ref] if ref else []) + others:
        for p in r.get("images") or []:
            names[Path(p).name] = None
    return sorted(names)


def _find(record: dict | None, name: str) -> Path | None:
    for p in (record or {}).get("images") or []:
        if Path(p).name == name:
            return Path(p)
    return None


def _open(path: Path | None) -> Image.Image | None:
    if path is None or not path.is_file():
        return None
    with Image.open(path) as img:
        return img.convert("RGB")


def _reference_images(ref: dict | None, others: list[dict], names: list[str]) -> dict[str, Image.Image | None]:
    """BF16 images by file name: the reference record's PNGs, else the cached reference tensor."""
    images = {name: _open(_find(ref, name)) for name in names}
    if all(images.values()):
        return images
    cached = _cached_reference(ref, others)
    if cached is not None:
        # Cached images are stored in workload order (prompt-major), the order of the PNG names.
        order = sorted(names, key=_prompt_seed)
        for name, tensor in zip(order, cached):
            if images.get(name) is None:
                images[name] = Image.fromarray(tensor.permute(1, 2, 0).numpy())
    return images


def _cached_reference(ref: dict | None, others: list[dict]):
    for r in ([ref] if ref else []) + others:
        key = (r.get("quality") or {}).get("reference")
        cache = ((r.get("config") or {}).get("run") or {}).get("cache_dir")
        path = Path(cache or "", "reference", key or "", "images.pt")
        if key and cache and path.is_file():
            import torch

            return torch.load(path, weights_only=True)
    return None


def _prompt_seed(name: str) -> tuple[int, int]:
    m = re.search(r"_p(\d+)_s(\d+)", name)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _fmt(value, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{format(value, spec)}{unit}"


def _memory(m: dict) -> str:
    gib = m.get("peak_mem_gib") if m.get("peak_mem_gib") is not None else m.get("mem_after_load_gib")
    return f"{'' if m.get('memory_kind') == 'cuda' else 'RSS '}{_fmt(gib, '.2f', ' GiB')}"


def _caption(record: dict) -> list[str]:
    m, q = record.get("metrics") or {}, record.get("quality") or {}
    return [f"{_memory(m)} | {_fmt(m.get('steps_per_s'), '.2f', ' it/s')}",
            f"PSNR {_fmt(q.get('psnr_db'), '.1f', ' dB')} | LPIPS {_fmt(q.get('lpips'), '.3f')}"]


def _reference_caption(ref: dict | None) -> list[str]:
    if ref is None:
        return ["no BF16 record in the store", ""]
    m = ref.get("metrics") or {}
    return [f"{_memory(m)} | {_fmt(m.get('steps_per_s'), '.2f', ' it/s')}", "the yardstick of PSNR / LPIPS"]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font has one size
        return ImageFont.load_default()


def scale_line(top: float | None) -> str:
    """The header line that prints the difference row's colour scale."""
    if top is None:
        return "Difference row: no engine image of this size to compare with BF16."
    return (f"Difference row: |engine - BF16| per pixel, mean of R, G, B; one colour scale for the whole grid, "
            f"black 0 .. bright {top:.3g} of 255 (the {difference.PERCENTILE:g}th percentile; larger differences "
            "in the brightest colour).")


def _draw(tiles: list[tuple[str, list[str], Image.Image | None]], maps: list, top: float | None, path: Path,
          tile: int, title: str, group: list[dict]) -> None:
    """Rows of image tiles, each followed by its difference row (none when no tile has a map): under BF16
    the colour key, under each engine its map against BF16."""
    font, small = _font(max(11, tile // 18)), _font(max(10, tile // 22))
    line_h = max(13, tile // 15)
    cols = min(COLUMNS, len(tiles))
    rows = -(-len(tiles) // cols)
    cell_w, image_h = tile + PAD, tile + PAD + LABEL_LINES * line_h
    diff_h = (tile + PAD + 2 * line_h) if top is not None else 0
    width = cols * cell_w + PAD
    header = [title, provenance.one_line(group)]
    if provenance.is_synthetic(group):
        header.append(provenance.SYNTHETIC_WARNING)
    header.append(scale_line(top))
    wrapped = [w for text in header for w in textwrap.wrap(text, max(40, width // max(6, tile // 40)))]
    head_h = PAD + len(wrapped) * line_h + PAD
    canvas = Image.new("RGB", (width, head_h + rows * (image_h + diff_h) + PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(wrapped):
        draw.text((PAD, PAD + i * line_h), text, fill="black" if i == 0 else (90, 90, 90),
                  font=font if i == 0 else small)
    for i, (name, caption, image) in enumerate(tiles):
        x = PAD + (i % cols) * cell_w
        y = head_h + (i // cols) * (image_h + diff_h)
        _paste(canvas, draw, image, x, y, tile, "image missing", small)
        for j, text in enumerate([name, *caption][:LABEL_LINES]):
            draw.text((x, y + tile + 2 + j * line_h), text, fill="black" if j == 0 else (60, 60, 60),
                      font=font if j == 0 else small)
        if top is None:
            continue
        y += image_h
        if i == 0:
            _key(canvas, draw, x, y, tile, top, small, line_h)
            continue
        diff = maps[i - 1]
        _paste(canvas, draw, difference.picture(diff, top) if diff is not None else None, x, y, tile,
               "no difference map", small)
        for j, text in enumerate([f"|{name} - BF16|", difference.caption(diff)]):
            draw.text((x, y + tile + 2 + j * line_h), text, fill=(60, 60, 60), font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)


def _paste(canvas: Image.Image, draw, image: Image.Image | None, x: int, y: int, tile: int, missing: str,
           font) -> None:
    """``image`` scaled into the ``tile`` square at (x, y), or a grey placeholder saying ``missing``."""
    if image is None:
        draw.rectangle([x, y, x + tile - 1, y + tile - 1], outline=(180, 180, 180), fill=(240, 240, 240))
        draw.text((x + 8, y + tile // 2), missing, fill=(120, 120, 120), font=font)
        return
    factor = tile / max(image.size)
    w, h = max(1, round(image.width * factor)), max(1, round(image.height * factor))
    canvas.paste(image.resize((w, h), Image.Resampling.LANCZOS), (x + (tile - w) // 2, y + (tile - h) // 2))


def _key(canvas: Image.Image, draw, x: int, y: int, tile: int, top: float, font, line_h: int) -> None:
    """The colour key of the difference row, in the BF16 column: a bar from 0 to ``top`` with both ends named."""
    bar_h = max(8, tile // 8)
    bar_y = y + tile // 2 - bar_h // 2
    draw.text((x, bar_y - 2 * line_h), "difference colour scale", fill="black", font=font)
    canvas.paste(difference.key(tile, bar_h), (x, bar_y))
    draw.rectangle([x, bar_y, x + tile - 1, bar_y + bar_h - 1], outline=(120, 120, 120))
    high = f"{top:.3g}"
    draw.text((x, bar_y + bar_h + 2), "0", fill=(60, 60, 60), font=font)
    draw.text((x + tile - draw.textlength(high, font=font), bar_y + bar_h + 2), high, fill=(60, 60, 60), font=font)
    draw.text((x, y + tile + 2), "|engine - BF16| per pixel", fill=(60, 60, 60), font=font)
    draw.text((x, y + tile + 2 + line_h), "(of 255, mean of R, G, B)", fill=(60, 60, 60), font=font)


def slug(text: str) -> str:
    """``text`` fit for a file name: runs of other characters than letters, digits, dots and dashes
    become one dash."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x"
