"""`harness.cudagraph` off the GPU: where the mode is refused, call signatures, and the replay book-keeping
(capture stood in for by an eager run into static buffers; the real capture is tests/gpu/test_gpu_cudagraph.py)."""
import pytest
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from engines.base import Unsupported
from harness import cudagraph


def test_refused_without_cuda_or_with_an_offload_mode():
    with pytest.raises(Unsupported, match="needs a CUDA device"):
        cudagraph.check(torch.device("cpu"), "none")
    with pytest.raises(Unsupported, match="offload=balanced moves the weights"):
        cudagraph.check(torch.device("cuda"), "balanced")
    cudagraph.check(torch.device("cuda"), "none")


def test_signature_tells_shapes_dtypes_and_values_apart():
    a = torch.zeros(2, 3)
    assert cudagraph.signature([a, 1, None]) == cudagraph.signature([torch.ones(2, 3), 1, None])
    assert cudagraph.signature([a]) != cudagraph.signature([torch.zeros(3, 2)])
    assert cudagraph.signature([a]) != cudagraph.signature([a.bfloat16()])
    assert cudagraph.signature([a, True]) != cudagraph.signature([a, False])
    assert cudagraph.signature([[1, 2]]) == cudagraph.signature([[1, 2]])  # unhashable values by repr


def _eager_capture(self, leaves, spec):
    static_in = [leaf.clone() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]

    def run():
        args, kwargs = tree_unflatten(static_in, spec)
        return tree_flatten(self.forward(*args, **kwargs))

    static_out, out_spec = run()

    def replay():
        for static, new in zip(static_out, run()[0]):
            if isinstance(static, torch.Tensor):
                static.copy_(new)

    return replay, static_in, static_out, out_spec


def test_one_capture_per_signature_and_outputs_are_copies(monkeypatch):
    monkeypatch.setattr(cudagraph.GraphedForward, "_capture", _eager_capture)
    layer = torch.nn.Linear(4, 4)
    graphed = cudagraph.install(layer)
    assert layer.forward is graphed
    xs = [torch.randn(2, 4) for _ in range(3)]
    outs = [layer(x) for x in xs]
    for x, out in zip(xs, outs):  # each output is its own input's, not overwritten by later replays
        torch.testing.assert_close(out, graphed.forward(x))
    assert graphed.captures == 1 and graphed.replays == 3
    layer(torch.randn(5, 4))
    assert graphed.captures == 2 and len(graphed.graphs) == 2


def test_structured_arguments_and_outputs(monkeypatch):
    monkeypatch.setattr(cudagraph.GraphedForward, "_capture", _eager_capture)

    def forward(x, extra=None, return_dict=True):
        out = x * 2 + extra["shift"]
        return {"sample": out} if return_dict else (out,)

    graphed = cudagraph.GraphedForward(forward)
    x, shift = torch.randn(3), torch.randn(3)
    (out,) = graphed(x, extra={"shift": shift}, return_dict=False)
    torch.testing.assert_close(out, x * 2 + shift)
    assert graphed(x, extra={"shift": shift})["sample"].shape == (3,) and graphed.captures == 2


def test_reduce_overhead_needs_cuda_graphs_too():
    from harness import compilation

    with pytest.raises(Unsupported, match="compile=reduce-overhead is torch.compile with CUDA graphs"):
        compilation.check("reduce-overhead", torch.device("cpu"), "none")
    compilation.check("reduce-overhead", torch.device("cuda"), "balanced")


@pytest.mark.parametrize("offload", ["none", "balanced"])
def test_regional_cudagraph_is_refused_where_cudagraph_is(offload):
    from harness import compilation

    with pytest.raises(Unsupported, match="compile=regional-cudagraph needs a CUDA device"):
        compilation.check("regional-cudagraph", torch.device("cpu"), offload)
    if offload != "none":
        with pytest.raises(Unsupported, match=f"offload={offload}"):
            compilation.check("regional-cudagraph", torch.device("cuda"), offload)
    with pytest.raises(Unsupported, match="compile=regional-cudagraph with a LoRA"):
        compilation.check("regional-cudagraph", torch.device("cuda"), "none", lora=True)


def test_regional_cudagraph_compiles_the_blocks_then_graphs_the_forward(monkeypatch):
    from types import SimpleNamespace

    from harness import compilation, cudagraph

    calls = []

    class Denoiser(torch.nn.Module):
        _repeated_blocks = ["Block"]

        def compile_repeated_blocks(self, **kwargs):
            calls.append(("blocks", kwargs))

    monkeypatch.setattr(cudagraph, "install", lambda model: calls.append(("graph", model)) or SimpleNamespace(warmup=2))
    pipe = SimpleNamespace(transformer=Denoiser())
    report = compilation.apply(pipe, "regional-cudagraph")
    assert [c[0] for c in calls] == ["blocks", "graph"] and calls[0][1] == {"fullgraph": False, "dynamic": False}
    assert report == {"mode": "regional-cudagraph", "blocks": ["Block"], "fullgraph": False, "dynamic": False,
                      "warmup_runs": 2}
