"""Full-size tameness check (GPU): BF16 vs FP32 output of the synthetic FLUX.1-dev transformer, one
forward at 1024x1024 (4096 image + 512 text tokens). Prints the relative error."""
import torch

from harness.synthetic import ARCHITECTURES, tame_init_


def main(name: str = "flux-dev") -> None:
    from diffusers import FluxTransformer2DModel

    device = torch.device("cuda")
    with torch.device(device):
        fp32 = FluxTransformer2DModel(**ARCHITECTURES[name].components["transformer"])
    tame_init_(fp32, generator=torch.Generator(device).manual_seed(0))
    g = torch.Generator(device).manual_seed(1)
    side = 64
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float().to(device)
    inputs = dict(hidden_states=torch.randn(1, side * side, 64, generator=g, device=device),
                  encoder_hidden_states=torch.randn(1, 512, 4096, generator=g, device=device),
                  pooled_projections=torch.randn(1, 768, generator=g, device=device),
                  timestep=torch.tensor([0.5], device=device), guidance=torch.tensor([3.5], device=device),
                  img_ids=img_ids, txt_ids=torch.zeros(512, 3, device=device))
    with torch.no_grad():
        ref = fp32(**inputs).sample
        bf16 = fp32.to(torch.bfloat16)
        out = bf16(**{k: v.to(torch.bfloat16) if k in ("hidden_states", "encoder_hidden_states", "pooled_projections")
                      else v for k, v in inputs.items()}).sample.float()
    rel = ((out - ref).norm() / ref.norm()).item()
    print(f"{name} transformer BF16 vs FP32 relative error: {rel:.4f} (output std {ref.std().item():.3f})")


if __name__ == "__main__":
    main()
