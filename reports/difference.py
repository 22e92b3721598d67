"""Difference maps for the image grids: |engine - BF16| per pixel, drawn in one colour scale per grid.

A map is the absolute difference of two 8-bit RGB images averaged over R, G and B (0 .. 255 per pixel).
The scale of a grid is shared by all its maps, so equal colours mean equal differences across the row: it is
the 99th percentile of every pixel of every map in the grid (the maximum when that percentile is 0; at least 1),
and larger differences are drawn in the top colour.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

#: The colour map of the difference row: black is equal to BF16, bright is far from it.
COLOURMAP = "magma"
PERCENTILE = 99.0


@dataclass
class Difference:
    """One engine tile's map against BF16."""

    #: Per-pixel |engine - BF16|, mean over R, G, B, 0 .. 255 (height x width floats).
    values: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def max(self) -> float:
        return float(self.values.max())


def of(image: Image.Image | None, reference: Image.Image | None) -> Difference | None:
    """The map of ``image`` against ``reference``; None when either is missing or their sizes differ."""
    if image is None or reference is None or image.size != reference.size:
        return None
    a = np.asarray(image.convert("RGB"), dtype=np.float32)
    b = np.asarray(reference.convert("RGB"), dtype=np.float32)
    return Difference(np.abs(a - b).mean(axis=2))


def scale(maps: list[Difference | None]) -> float | None:
    """The grid's one colour scale (see the module's docstring); None when no tile has a map."""
    present = [m.values.ravel() for m in maps if m is not None]
    if not present:
        return None
    values = np.concatenate(present)
    top = float(np.percentile(values, PERCENTILE))
    if top <= 0:
        top = float(values.max())
    return max(top, 1.0)


def colours(fractions: np.ndarray) -> np.ndarray:
    """RGB uint8 colours of `COLOURMAP` for values in [0, 1] (clipped)."""
    import matplotlib

    rgba = matplotlib.colormaps[COLOURMAP](np.clip(fractions, 0.0, 1.0))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def picture(diff: Difference, top: float) -> Image.Image:
    """``diff`` as an RGB image in the colour scale 0 .. ``top``."""
    return Image.fromarray(colours(diff.values / top))


def key(width: int, height: int) -> Image.Image:
    """A horizontal colour bar from 0 (left) to the top of the scale (right)."""
    ramp = np.tile(np.linspace(0.0, 1.0, max(2, width)), (max(1, height), 1))
    return Image.fromarray(colours(ramp))


def caption(diff: Difference | None) -> str:
    """One line under an engine's map: its mean and maximum difference (of 255)."""
    if diff is None:
        return "no difference map (image missing or another size)"
    return f"|diff| mean {diff.mean:.2f}, max {diff.max:.0f} (of 255)"
