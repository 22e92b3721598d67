import pytest
import torch


@pytest.fixture(autouse=True)
def _inference():
    """As in a pipeline call: no autograd graph (it would hold references to quantized weights). And one
    intra-op thread: OpenMP workers started in the pytest process would hang the cells that later tests
    fork from it (libgomp is not fork-safe)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)
