"""Pyramid Attention Broadcast (Zhao et al. 2024, PAB; diffusers' `PyramidAttentionBroadcastConfig` /
`apply_pyramid_attention_broadcast`) on a DiT: its two graphs, its schedule, and the reference run
of diffusers' own hook that fd's `pab:N[:LO:HI]` is tested against.

diffusers hooks every self-attention layer its spatial identifiers match (a DiT's
`transformer_blocks.*.attn1`): a layer computes on its first call, outside the open timestep range
(LO, HI) and on every N-th call; in between it returns its last output (the attention output after
`to_out`, before the block's adaLN gate). The schedule depends on the step and its timestep only:
every layer and every sample computes on the same steps.

Graphs (`pab.pt`, the token stream from h0 = `stepcache_embed`'s first output to the last block's
output hL, as `stepcache_first` + `stepcache_rest`):
  pab_capture  (h0, emb, cond)          -> (hL, attn_0, ..., attn_{L-1})   every block's attn1 output
  pab_reuse    (h0, emb, cond, attn_*)  -> hL                               attn1 replaced by attn_j
"""
from __future__ import annotations

import torch
from torch import nn

PAB_GRAPHS = ("pab_capture", "pab_reuse")
PAB_FILE = "pab.pt"
# diffusers' PyramidAttentionBroadcastConfig default timestep range (its skip range has no default:
# diffusers warns and uses 2)
DEFAULT_RANGE = (100, 800)

_CTX: dict = {"given": None, "seen": None}


class _PabProcessor:
    """Wraps a block's attn1 processor: returns the output given to the graph (pab_reuse), else
    computes it and records it (pab_capture)."""

    def __init__(self, inner, index: int):
        self.inner, self.index = inner, index

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if _CTX["given"] is not None:
            return _CTX["given"][self.index]
        out = self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                         attention_mask=attention_mask, temb=temb, **kw)
        _CTX["seen"][self.index] = out
        return out


class DiTPab(nn.Module):
    """One of PAB_GRAPHS over a DiTParts whose blocks' attn1 run _PabProcessor (its own copy)."""

    def __init__(self, parts, mode: str):
        super().__init__()
        self.parts, self.mode = parts, mode

    def forward(self, x, emb, cond, *given):
        from ..dit import _grid, _labels, _tokens

        p = self.parts
        blocks = p.m.transformer_blocks
        _CTX["given"] = list(given) if self.mode == "pab_reuse" else None
        _CTX["seen"] = [None] * len(blocks)
        try:
            h = _grid(p.blocks(_tokens(x), emb, _labels(cond), blocks), p.d, p.gh, p.gw)
            return h if self.mode == "pab_reuse" else (h, *_CTX["seen"])
        finally:
            _CTX["given"] = _CTX["seen"] = None


def dit_pab_graphs(model, split: int, h0, emb, cond) -> dict:
    """The two PAB graphs with example inputs (h0 from stepcache_embed), for trace_methods: on
    their own copy of the model, whose blocks' attn1 processors are wrapped."""
    from ..dit import DiTParts

    parts = DiTParts(model, split)
    for j, blk in enumerate(parts.m.transformer_blocks):
        blk.attn1.set_processor(_PabProcessor(blk.attn1.processor, j))
    cap = DiTPab(parts, "pab_capture").eval()
    with torch.no_grad():
        outs = cap(h0, emb, cond)
    return {"pab_capture": (cap, [h0, emb, cond]),
            "pab_reuse": (DiTPab(parts, "pab_reuse").eval(), [h0, emb, cond, *outs[1:]])}


def schedule(timesteps, n: int, lo: float = DEFAULT_RANGE[0], hi: float = DEFAULT_RANGE[1]) -> list[bool]:
    """Which steps compute attention, as PyramidAttentionBroadcastHook decides (transcribed:
    iteration 0, outside lo < t < hi, or every n-th iteration)."""
    return [i == 0 or not (lo < float(t) < hi) or i % n == 0 for i, t in enumerate(timesteps)]


def diffusers_reference(tr, sched, x, labels2, guidance: float, skip_range: int, lo: float, hi: float,
                        guidance_channels=None):
    """diffusers' own PAB hook (spatial attention, `current_timestep_callback` = the loop's
    timestep) on a DiTTransformer2DModel (fd_export.methods.hooks.dit_hook_reference): (final
    latents, per-step flags: whether the last block's attention ran)."""
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

    from .hooks import dit_hook_reference

    now = {"t": None}
    timesteps = iter(sched.timesteps)

    def apply(m):
        cfg = PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=skip_range,
                                              spatial_attention_timestep_skip_range=(lo, hi),
                                              current_timestep_callback=lambda: now["t"])
        apply_pyramid_attention_broadcast(m, cfg)
        # the loop's current timestep, set before each call (DiTPipeline has no `current_timestep`)
        m.register_forward_pre_hook(lambda *a: now.update(t=int(next(timesteps))))

    return dit_hook_reference(tr, apply, sched, x, labels2, guidance, guidance_channels)
