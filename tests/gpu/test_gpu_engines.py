"""Engines on a real GPU: weights are converted when the engine returns, not lazily at first forward."""
import pytest
import torch

from engines.base import module_nbytes

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", ["int8", "nf4"])
def test_bnb_post_mode_on_gpu_stores_quantized_weights(dtype):
    from engines.bnb import BitsAndBytesEngine

    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.Linear(512, 256)).to("cuda", torch.bfloat16)
    before = module_nbytes(model)
    engine = BitsAndBytesEngine(dtype)
    engine.check_platform(torch.device("cuda"))
    engine.quantize("transformer", model)
    assert module_nbytes(model) < 0.6 * before
    assert all(p.dtype in (torch.int8, torch.uint8) for n, p in model.named_parameters() if n.endswith("weight"))
