"""The reference loop TeaCache and First-Block Cache share (as crates/fd-sched/src/methods/step_cache.rs
does): on a UNet, and in their official DiT form."""
from __future__ import annotations

import torch


def step_cache_reference(unet, sched, x, c2, guidance: float, rule: str, threshold: float,
                         coefficients=None, residual: bool = False):
    """TeaCache / First-Block Cache on a UNet, transcribed for one sample and its two CFG rows
    (`c2` = [uncond; cond] states), on the eager diffusers UNet with the indicators read by forward
    hooks (an independent check of fd's probe graphs).

    rule "teacache" (ali-vilab/TeaCache, e.g. TeaCache4FLUX's forward): the indicator is the first
    block's timestep-modulated input (a UNet: the tensor down_blocks[0].resnets[0].norm2 receives);
    the first and last steps compute; otherwise the relative L1 change of the indicator against the
    previous step, mean|a - b| / mean|b|, is rescaled by the polynomial (np.poly1d(coefficients))
    and accumulated; while the sum stays below `threshold` the step reuses the cache, else it
    computes and the sum restarts at 0. The indicator of every step becomes the previous one.
    rule "fbcache" (diffusers' FirstBlockCache hook / ParaAttention): the indicator is the first
    block's output (a UNet: conv_in, LDM's input_blocks[0]); the first step computes; a step
    computes when the relative L1 change against the indicator of the last computed step exceeds
    `threshold`, which then becomes the stored one.
    What a skipped step reuses: the last computed UNet output (residual False), or, as the UNet
    ports of both methods (sd-forge First Block Cache / TeaCache) do, the input plus the cached
    residual (output - input) of the last computed step (residual True).
    Returns (final latents, list of per-step "computed" flags)."""
    import numpy as np

    grabbed = {}
    if rule == "teacache":
        hook = unet.down_blocks[0].resnets[0].norm2.register_forward_pre_hook(
            lambda mod, args: grabbed.__setitem__("ind", args[0].detach().clone()))
    elif rule == "fbcache":
        hook = unet.conv_in.register_forward_hook(lambda mod, args, out: grabbed.__setitem__("ind", out.detach().clone()))
    else:
        raise ValueError(rule)
    rescale = np.poly1d(coefficients) if coefficients is not None else (lambda v: v)
    rel = lambda a, b: float((a - b).abs().mean() / b.abs().mean())  # noqa: E731
    n = len(sched.timesteps)
    prev = stored = cache = None
    acc, flags = 0.0, []
    try:
        for i, t in enumerate(sched.timesteps):
            x2 = torch.cat([x, x])
            # the indicator alone (what fd's probe graph computes) before deciding: the hooked
            # module runs inside a full forward, whose output is kept only when the step computes
            out = unet(x2, t, encoder_hidden_states=c2).sample
            ind = grabbed["ind"]
            if rule == "teacache":
                if i == 0 or i == n - 1:
                    compute, acc = True, 0.0
                else:
                    acc += float(rescale(rel(ind, prev)))
                    compute = acc >= threshold
                    if compute:
                        acc = 0.0
                prev = ind
            else:
                compute = stored is None or rel(ind, stored) > threshold
                if compute:
                    stored = ind
            if compute:
                cache = out - x2 if residual else out
                pred = out
            else:
                pred = x2 + cache if residual else cache
            flags.append(compute)
            u, c = pred.chunk(2)
            x = sched.step(u + guidance * (c - u), t, x).prev_sample
    finally:
        hook.remove()
    return x, flags


def dit_step_cache_reference(tr, sched, x, labels2, guidance: float, rule: str, threshold: float,
                             coefficients=None, guidance_channels=None):
    """TeaCache / First-Block Cache on a diffusers DiTTransformer2DModel, transcribed from their
    official DiT code paths for one sample and its two CFG rows (`labels2` = [null, class]): the
    transformer's own forward runs every step, with its blocks' forwards replaced (as TeaCache
    patches its models' forward and FBCache wraps the block list):
    - teacache: before block 0 runs, its modulated input norm1(h0, t, labels)[0] is the indicator
      (first and last steps compute; else the rescaled relative L1 change against the previous
      step's is accumulated, and the step reuses while the sum stays below `threshold`); a
      reused step returns h0 + the cached residual from block 0 and the other blocks pass their
      input through; a computed step caches (last block's output - h0);
    - fbcache: block 0 always runs; its residual h1 - h0 is the indicator, compared with the one
      of the last computed step (compute when the relative L1 change exceeds `threshold`); a
      reused step returns h1 + the cached residual of blocks 1..; a computed step caches
      (last block's output - h1).
    The final layer runs at the step's own timestep either way. Guidance on the first
    `guidance_channels` (all when None) of the noise prediction; a learned sigma is dropped (DDIM).
    Returns (final latents, per-step "computed" flags)."""
    import numpy as np

    blocks = list(tr.transformer_blocks)
    cin = tr.config.in_channels
    rescale = np.poly1d(coefficients) if coefficients is not None else (lambda v: v)
    rel = lambda a, b: float((a - b).abs().mean() / b.abs().mean())  # noqa: E731
    st = dict(i=0, acc=0.0, prev=None, skip=False, start=None, residual=None, flags=[])
    n = len(sched.timesteps)
    originals = [b.forward for b in blocks]

    def decide(ind):
        i = st["i"]
        if rule == "teacache":
            if i == 0 or i == n - 1:
                compute, st["acc"] = True, 0.0
            else:
                st["acc"] += float(rescale(rel(ind, st["prev"])))
                compute = st["acc"] >= threshold
                if compute:
                    st["acc"] = 0.0
            st["prev"] = ind
        else:
            compute = st["prev"] is None or rel(ind, st["prev"]) > threshold
            if compute:
                st["prev"] = ind
        st["flags"].append(compute)
        st["skip"] = not compute
        return compute

    def first(hidden_states, *a, **k):
        if rule == "teacache":
            ind = blocks[0].norm1(hidden_states, k["timestep"], k["class_labels"], hidden_dtype=hidden_states.dtype)[0]
            if not decide(ind):
                return hidden_states + st["residual"]
            st["start"] = hidden_states
            out = originals[0](hidden_states, *a, **k)
        else:
            out = originals[0](hidden_states, *a, **k)
            if not decide(out - hidden_states):
                return out + st["residual"]
            st["start"] = out
        if len(blocks) == 1:
            st["residual"] = out - st["start"]
        return out

    def later(j):
        def fwd(hidden_states, *a, **k):
            if st["skip"]:
                return hidden_states
            out = originals[j](hidden_states, *a, **k)
            if j == len(blocks) - 1:
                st["residual"] = out - st["start"]
            return out
        return fwd

    blocks[0].forward = first
    for j in range(1, len(blocks)):
        blocks[j].forward = later(j)
    try:
        for i, t in enumerate(sched.timesteps):
            st["i"] = i
            out = tr(torch.cat([x, x]), timestep=t.expand(2), class_labels=labels2).sample
            u, c = out[:, :cin].chunk(2)
            g = guidance_channels or cin
            eps = torch.cat([u[:, :g] + guidance * (c[:, :g] - u[:, :g]), c[:, g:]], 1)
            x = sched.step(eps, t, x).prev_sample
    finally:
        for b_, f in zip(blocks, originals):
            b_.forward = f
    return x, st["flags"]
