"""`harness.cpu_vae`: the VAE computes in float32 on a CPU without BF16 convolutions, and says so."""
import pytest
import torch
from torch import nn

from harness import cpu_vae


class Vae(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, 3, padding=1, dtype=torch.bfloat16)
        self.decoder = nn.Conv2d(4, 3, 3, padding=1, dtype=torch.bfloat16)
        self.conv = self.decoder

    def decode(self, z, return_dict=True):
        return self.decoder(z)

    def encode(self, x):
        return self.encoder(x)


class Pipe:
    def __init__(self):
        self.vae = Vae()


def test_a_plain_bf16_vae_on_a_cpu_without_bf16_convolutions_decodes_in_float32_and_encodes_in_bf16(monkeypatch):
    monkeypatch.setattr(cpu_vae, "bf16_convolutions_native", lambda: False)
    pipe = Pipe()
    z = torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)
    ref = nn.functional.conv2d(z.float(), pipe.vae.conv.weight.float(), pipe.vae.conv.bias.float(), padding=1)
    assert cpu_vae.upcast(pipe, torch.device("cpu")) == cpu_vae.NOTE
    assert pipe.vae.conv.weight.dtype == torch.float32
    out = pipe.vae.decode(z, return_dict=False)  # a BF16 latent from the denoiser
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert pipe.vae.encode(torch.randn(1, 3, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("case", ["native", "cuda", "float32", "quantized", "none"])
def test_the_vae_is_left_alone_otherwise(monkeypatch, case):
    monkeypatch.setattr(cpu_vae, "bf16_convolutions_native", lambda: case == "native")
    pipe = Pipe()
    device = torch.device("cuda" if case == "cuda" else "cpu")
    if case == "float32":
        pipe.vae.float()
    if case == "quantized":
        class Packed(torch.Tensor):
            pass
        pipe.vae.conv.weight = nn.Parameter(pipe.vae.conv.weight.data.as_subclass(Packed), requires_grad=False)
    if case == "none":
        pipe.vae = None
    before = None if pipe.vae is None else pipe.vae.conv.weight.dtype
    assert cpu_vae.upcast(pipe, device) is None
    if pipe.vae is not None:
        assert pipe.vae.conv.weight.dtype == before and "decode" not in vars(pipe.vae)


def test_a_cpu_cell_records_its_vae_compute_dtype(cli, tmp_path):
    import json

    proc = cli("model=flux-tiny", "engine=bf16", "workload=tiny", "workload.height=64", "workload.width=64",
               "workload.steps=1", "metrics.save_images=false", "run.device=cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(next((tmp_path / "outputs").rglob("result.json")).read_text())
    expected = None if cpu_vae.bf16_convolutions_native() else cpu_vae.NOTE
    assert record["engine_report"].get("vae_compute_dtype") == expected
