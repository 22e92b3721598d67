"""Quantized attention (option ``quantized_attention``): Q x K^T in INT8 (``int8``), and P x V in FP8 too
(``int8-fp8``).

``softmax(Q K^T * scale) V`` with
* K centred per channel (its mean over the tokens subtracted: a per-query constant in every score, so the
  softmax is unchanged, and the int8 range is spent on what varies);
* Q and the centred K in int8 with one scale per token (amax / 127);
* with ``int8-fp8``, V in float8_e4m3fn with one scale per channel over the tokens (amax / 448), and the
  probabilities, at most 1 after the running maximum is subtracted, scaled by `P_SCALE` and rounded to
  float8_e4m3fn for the P x V product; with ``int8`` V and P stay in the compute dtype (bf16). The row sums
  are kept in fp32.
The quantization is plain torch code, so under torch.compile it fuses into the kernels that produce Q, K, V
(RMSNorm, RoPE). On CUDA with FP8 tensor cores (sm_89+) the product runs in the Triton flash-attention kernel
of `engines.sdnq.triton_attention`; elsewhere `emulate` computes the same quantized operands in fp32 (one
softmax over all keys, where the kernel rescales block by block, so the two differ only by the rounding of P).

`FluxQuantizedAttnProcessor` is the attention of diffusers' ``FluxAttention`` (projections, fused or not,
the q / k RMSNorms, the text stream's projections, rotary embedding, output projections) with this
attention in place of SDPA; an attention mask sends a call to SDPA.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

P_SCALE = 256.0
FP8 = torch.float8_e4m3fn
#: Head sizes the kernel takes (powers of two; FLUX's is 128).
HEAD_DIMS = (64, 128)
LOG2E = 1.0 / math.log(2.0)


@functools.lru_cache(maxsize=None)
def kernel_available(index: int | None = None, pv_fp8: bool = True) -> bool:
    """CUDA with the tensor cores the kernel needs (INT8: sm_80+; FP8 for ``pv_fp8``: sm_89+) and Triton."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.get_device_capability(index) >= ((8, 9) if pv_fp8 else (8, 0))


def quantize(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pv_fp8: bool = True):
    """The operands of the kernel from ``[B, H, S, D]`` tensors: (qi, qs, ki, ks, vq, vs) with qi / ki int8
    ``[B, H, S, D]``, qs / ks fp32 ``[B, H, S]``, vq ``[B, H, S, D]`` (float8_e4m3fn with ``pv_fp8``, else ``v``
    itself) and vs fp32 ``[B, H, D]`` (ones without ``pv_fp8``)."""
    qf, kf = q.float(), k.float()
    kf = kf - kf.mean(dim=2, keepdim=True)
    qs = qf.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0
    ks = kf.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0
    qi = (qf / qs).round().clamp(-127, 127).to(torch.int8)
    ki = (kf / ks).round().clamp(-127, 127).to(torch.int8)
    if not pv_fp8:
        return qi, qs.squeeze(-1), ki, ks.squeeze(-1), v, v.new_ones(v.shape[:2] + v.shape[3:], dtype=torch.float32)
    top = torch.finfo(FP8).max
    vf = v.float()
    vs = vf.abs().amax(2, keepdim=True).clamp_min(1e-12) / top
    vq = (vf / vs).clamp(-top, top).to(FP8)
    return qi, qs.squeeze(-1), ki, ks.squeeze(-1), vq, vs.squeeze(2)


def emulate(qi, qs, ki, ks, vq, vs, scale: float, out_dtype: torch.dtype) -> torch.Tensor:
    """The kernel's arithmetic in fp32 torch (``[B, H, S, D]``): exact int8 scores, P rounded to ``vq``'s dtype
    for the P x V product."""
    s = (qi.float() @ ki.float().transpose(-1, -2)) * qs.unsqueeze(-1) * ks.unsqueeze(-2) * scale
    p = torch.exp(s - s.amax(-1, keepdim=True))
    pq = (p * P_SCALE).to(vq.dtype).float()
    out = (pq @ vq.float()) * vs.unsqueeze(-2) / (P_SCALE * p.sum(-1, keepdim=True))
    return out.to(out_dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
              pv_fp8: bool = True) -> torch.Tensor:
    """softmax(q k^T * scale) v for ``[B, H, S, D]`` tensors, on quantized operands (module doc)."""
    b, h, s, d = q.shape
    scale = d ** -0.5 if scale is None else scale
    qi, qs, ki, ks, vq, vs = quantize(q, k, v, pv_fp8)
    if q.is_cuda and d in HEAD_DIMS and kernel_available(q.device.index, pv_fp8):
        from engines.sdnq.triton_attention import int8_attention
        flat = (b * h, s, d)
        out = int8_attention(qi.reshape(flat), qs.reshape(b * h, s), ki.reshape(flat), ks.reshape(b * h, s),
                             vq.transpose(-1, -2).reshape(b * h, d, s), vs.reshape(b * h, d), scale * LOG2E, q.dtype)
        return out.view(b, h, s, d)
    return emulate(qi, qs, ki, ks, vq, vs, scale, q.dtype)


#: The option's choices -> whether P x V is in FP8.
MODES = {"int8": False, "int8-fp8": True}


class FluxQuantizedAttnProcessor:
    """The processor of a diffusers ``FluxAttention`` with `attention` in place of SDPA (module doc); ``mode``
    is a `MODES` key."""

    def __init__(self, mode: str = "int8"):
        self.mode = mode
        self.pv_fp8 = MODES[mode]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb

        text = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
            if text:
                t_query, t_key, t_value = attn.to_added_qkv(encoder_hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
            if text:
                t_query = attn.add_q_proj(encoder_hidden_states)
                t_key = attn.add_k_proj(encoder_hidden_states)
                t_value = attn.add_v_proj(encoder_hidden_states)
        heads = lambda t: t.unflatten(-1, (-1, attn.head_dim))  # noqa: E731  [B, S, H, D]
        query, key, value = attn.norm_q(heads(query)), attn.norm_k(heads(key)), heads(value)
        if text:
            query = torch.cat([attn.norm_added_q(heads(t_query)), query], dim=1)
            key = torch.cat([attn.norm_added_k(heads(t_key)), key], dim=1)
            value = torch.cat([heads(t_value), value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # [B, H, S, D]
        if attention_mask is None:
            out = attention(q, k, v, pv_fp8=self.pv_fp8)
        else:
            if attention_mask.dim() == 2:  # [B, S_k] key mask
                attention_mask = attention_mask[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        n_text = encoder_hidden_states.shape[1]
        text_out, out = out[:, :n_text], out[:, n_text:]
        out = attn.to_out[1](attn.to_out[0](out.contiguous()))
        return out, attn.to_add_out(text_out.contiguous())


#: Attention classes (diffusers class names) and the quantized processor that replaces theirs.
PROCESSORS = {"FluxAttention": FluxQuantizedAttnProcessor}
#: Denoisers (diffusers class names) whose pipeline passes an attention mask with every call, which the kernel
#: does not take: each call would go to SDPA, so the option is refused for them.
MASKED = ("ChromaTransformer2DModel",)


def install(model: torch.nn.Module, mode: str) -> int:
    """Give every attention of ``model`` named in `PROCESSORS` its quantized processor in ``mode`` (a `MODES`
    key); returns how many. A `MASKED` model raises `ValueError` (its calls would never reach the kernel)."""
    if type(model).__name__ in MASKED:
        raise ValueError(f"{type(model).__name__}'s pipeline passes an attention mask with every call, which the "
                         "quantized attention kernel does not take")
    count = 0
    for module in model.modules():
        processor = PROCESSORS.get(type(module).__name__)
        if processor is not None:
            module.set_processor(processor(mode))
            count += 1
    return count
