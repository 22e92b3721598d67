"""`harness.cell.save_images`: one PNG per image in workload order, every frame of a video named apart."""
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from harness.cell import save_images


def _images(n):
    return [torch.full((3, 4, 4), 10 * i, dtype=torch.uint8) for i in range(n)]


def test_images_are_named_by_prompt_and_seed(tmp_path):
    cell = SimpleNamespace(workload={"prompts": ["a", "b"], "seeds": [0, 7]})
    paths = save_images(_images(4), tmp_path, cell)
    assert [p.name for p in paths] == ["image_p0_s0.png", "image_p0_s7.png", "image_p1_s0.png", "image_p1_s7.png"]


def test_every_frame_of_a_video_is_saved_under_its_own_seed(tmp_path):
    cell = SimpleNamespace(workload={"prompts": ["a"], "seeds": [0, 1]})
    paths = save_images(_images(6), tmp_path, cell)  # two videos of three frames
    assert [p.name for p in paths] == [f"image_p0_s{s}_f{f}.png" for s in (0, 1) for f in range(3)]
    assert np.asarray(Image.open(tmp_path / "image_p0_s1_f0.png")).max() == 30  # seed 1's first frame
