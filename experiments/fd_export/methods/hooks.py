"""diffusers' own cache hooks (`diffusers.hooks`) on a DiT, as the references fd's step-skipping
methods are tested against: one sample and its two CFG rows per call (the arrangement under which
the hooks' per-call decisions are per sample), DDIM with guidance on the first `guidance_channels`
of the noise prediction, as DiTPipeline's loop."""
from __future__ import annotations

import copy

import torch


def dit_hook_reference(tr, apply, sched, x, labels2, guidance: float, guidance_channels=None):
    """Run a copy of DiTTransformer2DModel `tr` with `apply(copy)` (e.g. `apply_mag_cache(m, cfg)`)
    over `sched.timesteps` from latents `x` (one sample) with `labels2` = [null, class].
    Hooks keep their state per cache context, which pipelines set with `cache_context` (DiT models
    have no CacheMixin and DiTPipeline sets none): one context for the whole run. Returns (final
    latents, per-step flags: whether the last block's attention computed, i.e. its query
    projection ran — a hook that replaces a block or an attention layer skips it)."""
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    tr = copy.deepcopy(tr)  # the hooks and their state stay on the copy
    apply(tr)
    _set_cache_context(tr, CacheContext("cfg"))
    ran = []
    probe = tr.transformer_blocks[-1].attn1.to_q.register_forward_hook(lambda *a: ran.append(True))
    cin = tr.config.in_channels
    flags = []
    try:
        for t in sched.timesteps:
            before = len(ran)
            out = tr(torch.cat([x, x]), timestep=t.expand(2), class_labels=labels2).sample
            flags.append(len(ran) > before)
            u, c = out[:, :cin].chunk(2)
            g = guidance_channels or cin
            eps = torch.cat([u[:, :g] + guidance * (c[:, :g] - u[:, :g]), c[:, g:]], 1)
            x = sched.step(eps, t, x).prev_sample
    finally:
        probe.remove()
    return x, flags


def fbcache_reference(tr, sched, x, labels2, guidance: float, threshold: float, guidance_channels=None):
    """diffusers' FirstBlockCache hook (`apply_first_block_cache`) at `threshold`."""
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    return dit_hook_reference(tr, lambda m: apply_first_block_cache(m, FirstBlockCacheConfig(threshold=threshold)),
                              sched, x, labels2, guidance, guidance_channels)
