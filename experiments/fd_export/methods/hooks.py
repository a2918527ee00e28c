"""diffusers' own cache hooks (`diffusers.hooks`) on a DiT, as the references fd's step-skipping
methods are tested against: one sample and its two CFG rows per call (the arrangement under which
the hooks' per-call decisions are per sample), DDIM with guidance on the first `guidance_channels`
of the noise prediction, as DiTPipeline's loop."""
from __future__ import annotations

import copy

import torch


def dit_hook_reference(tr, apply, sched, x, labels2, guidance: float, guidance_channels=None, rows: bool = False):
    """Run a copy of DiTTransformer2DModel `tr` with `apply(copy)` (e.g. `apply_mag_cache(m, cfg)`)
    over `sched.timesteps` from latents `x` (one sample) with `labels2` = [null, class].
    Hooks keep their state per cache context, which pipelines set with `cache_context` (DiT models
    have no CacheMixin and DiTPipeline sets none): one context for the whole run. Returns (final
    latents, per-step flags: whether the last block's attention computed, i.e. its query
    projection ran — a hook that replaces a block or an attention layer skips it; with `rows`, the
    number of rows it ran on, 0 when it did not)."""
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    tr = copy.deepcopy(tr)  # the hooks and their state stay on the copy
    apply(tr)
    _set_cache_context(tr, CacheContext("cfg"))
    ran = []
    probe = tr.transformer_blocks[-1].attn1.to_q.register_forward_hook(lambda m, a, o: ran.append(a[0].shape[0]))
    cin = tr.config.in_channels
    flags = []
    try:
        for t in sched.timesteps:
            before = len(ran)
            out = tr(torch.cat([x, x]), timestep=t.expand(2), class_labels=labels2).sample
            flags.append(sum(ran[before:]) if rows else len(ran) > before)
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


def fastercache_reference(tr, sched, x, labels2, guidance: float, uncond_skip: int, attention_skip: int,
                          attention_weight: float, guidance_channels=None):
    """diffusers' FasterCache hooks (`apply_faster_cache`: the CFG cache on the model, the attention
    cache on every block's attn1) with the loop's timestep as `current_timestep_callback`, a
    constant `attention_weight_callback`, `tensor_format` BCHW, and `class_labels` among the
    inputs split into unconditional and conditional rows (DiTPipeline passes them batched
    [null; class], which diffusers' default identifiers leave out). Returns (final latents,
    per-step (the unconditional rows ran, the attention computed))."""
    from diffusers.hooks import FasterCacheConfig, apply_faster_cache

    now = {"t": None}
    timesteps = iter(sched.timesteps)

    def apply(m):
        cfg = FasterCacheConfig(
            spatial_attention_block_skip_range=attention_skip, unconditional_batch_skip_range=uncond_skip,
            attention_weight_callback=lambda _: attention_weight, current_timestep_callback=lambda: now["t"],
            tensor_format="BCHW",
            _unconditional_conditional_input_kwargs_identifiers=["hidden_states", "timestep", "class_labels"])
        apply_faster_cache(m, cfg)
        m.register_forward_pre_hook(lambda *a: now.update(t=int(next(timesteps))))

    x, seen = dit_hook_reference(tr, apply, sched, x, labels2, guidance, guidance_channels, rows=True)
    rows = int(labels2.shape[0])
    return x, [(r == rows, r > 0) for r in seen]
