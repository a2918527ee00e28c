"""TaylorSeer (Liu et al. 2025, "From Reusing to Forecasting: Accelerating Diffusion Models with
TaylorSeers"; diffusers' `TaylorSeerCacheConfig` / `apply_taylorseer_cache`) on a DiT: the
schedule and the reference run of diffusers' own hook that fd's `taylorseer:N[:B[:O[:DTYPE]]]` is
tested against.

diffusers hooks the modules its identifiers match; its default identifiers (`^transformer_blocks.*attn`)
match no module of a diffusers DiT (its attention layers are `attn1`), so fd sets them to every
transformer block: on a computed step each block's output refreshes its Taylor factors; on the
other steps each block returns its forecast without running, so the last block's forecast is what
the final layer reads. fd forecasts that one tensor (the blocks' output tokens) directly.
"""
from __future__ import annotations

import torch

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
BLOCKS = [r"transformer_blocks\.\d+"]  # cache_identifiers: every transformer block


def schedule(n: int, cache_interval: int, disable_cache_before_step: int = 3) -> list[bool]:
    """Which of n steps run the blocks, as TaylorSeerCacheHook._measure_should_compute decides
    (transcribed: warm-up steps, then (i - B - 1) mod N == 0, Python's modulo)."""
    b = disable_cache_before_step
    return [i < b or (i - b - 1) % cache_interval == 0 for i in range(n)]


def diffusers_reference(tr, sched, x, labels2, guidance: float, cache_interval: int, disable_cache_before_step: int,
                        max_order: int, dtype: str, guidance_channels=None):
    """diffusers' own TaylorSeer hook (`apply_taylorseer_cache` with `cache_identifiers` = every
    transformer block) on a DiTTransformer2DModel (fd_export.methods.hooks.dit_hook_reference):
    (final latents, per-step computed flags)."""
    from diffusers.hooks.taylorseer_cache import TaylorSeerCacheConfig, apply_taylorseer_cache

    from .hooks import dit_hook_reference

    cfg = TaylorSeerCacheConfig(cache_interval=cache_interval, disable_cache_before_step=disable_cache_before_step,
                                max_order=max_order, taylor_factors_dtype=DTYPES[dtype], cache_identifiers=BLOCKS)
    return dit_hook_reference(tr, lambda m: apply_taylorseer_cache(m, cfg), sched, x, labels2, guidance,
                              guidance_channels)
