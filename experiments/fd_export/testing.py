"""Tiny random-init models for test fixtures (deterministic: every fixture script rebuilds them
from here), and the substituted diffusers forward that encoder-propagation references use."""
from __future__ import annotations

import hashlib
import os

import torch

from .fmnist import ClassCondEncoder

TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
    attention_head_dim=4, norm_num_groups=8,
)
SCHED = dict(_class_name="DDIMScheduler", num_train_timesteps=1000, beta_schedule="scaled_linear",
             beta_start=0.00085, beta_end=0.012, prediction_type="epsilon", clip_sample=False,
             set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")


def substituted_forward(unet, sample, t_dec, cond, t_enc):
    """diffusers forward at t_dec, with every encoder-side output replaced by its value at t_enc."""
    captured = {}
    mods = [("conv_in", unet.conv_in), ("mid", unet.mid_block)] + [
        (f"down{i}", b) for i, b in enumerate(unet.down_blocks)]
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o)) for k, m in mods]
    unet(sample, t_enc, encoder_hidden_states=cond)
    for h in hooks:
        h.remove()
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: captured[k]) for k, m in mods]
    out = unet(sample, t_dec, encoder_hidden_states=cond).sample
    for h in hooks:
        h.remove()
    return out


def build_tiny():
    """The tiny fixture model (deterministic: other fixture scripts rebuild it from here)."""
    torch.manual_seed(1234)
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**TINY_UNET).eval()
    # random init leaves conv_out at zero in some versions; perturb all params so outputs are rich
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    cond_enc = ClassCondEncoder(num_classes=3, seq_len=3, dim=16).eval()
    return unet, cond_enc


def fixture_stamp(out: str, sources: list[str]) -> str | None:
    """The stamp a generated fixture folder `out` must carry: SHA-256 of its generator `sources`
    and of every fd_export module. None (and a message) when `out` already carries it; otherwise
    the caller rebuilds `out` and then writes the stamp with `write_stamp`."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    files = list(sources) + [os.path.join(pkg, f) for f in sorted(os.listdir(pkg)) if f.endswith(".py")]
    stamp = hashlib.sha256(b"".join(open(f, "rb").read() for f in files)).hexdigest()
    path = os.path.join(out, "stamp")
    if os.path.exists(path) and open(path).read() == stamp:
        print(f"{out}: up to date")
        return None
    return stamp


def write_stamp(out: str, stamp: str) -> None:
    with open(os.path.join(out, "stamp"), "w") as f:
        f.write(stamp)
    print(f"wrote {out}")


class OfficialDeepCache:
    """DeepCache's own skipping rule (horseee/DeepCache, `DeepCacheSDHelper`, uniform mode),
    transcribed as forward hooks on a diffusers UNet2DConditionModel: the test reference for fd's
    `deepcache:N:ID` plans.

    Step i (counted by UNet calls) is a full step when i % interval == 0; then every wrapped module
    runs and its output is kept. At another step a module returns its kept output instead of
    running when the rule says skip: down / up blocks and their resnets, attentions and
    down/upsamplers carry (block, layer) indices, up-path indices counted from the output end;
    with (B, L) = divmod(cache_branch_id, 3): the mid block always; a block index > B; in block B,
    a down layer >= L or an up layer > L (a whole block is wrapped as layer 0)."""

    def __init__(self, unet, interval: int, cache_branch_id: int):
        self.interval, (self.block, self.layer) = interval, divmod(cache_branch_id, 3)
        self.step, self.kept, self.handles = -1, {}, [unet.register_forward_pre_hook(self._next)]
        for b, blk in enumerate(unet.down_blocks):
            n = len(blk.resnets)
            for i, m in enumerate(blk.resnets):
                self._wrap(m, ("down", b, i))
            for i, m in enumerate(getattr(blk, "attentions", None) or []):
                self._wrap(m, ("down", b, i), "attn")
            for m in blk.downsamplers or []:
                self._wrap(m, ("down", b, n), "ds")
            self._wrap(blk, ("down", b, 0), "block")
        self._wrap(unet.mid_block, ("mid", 0, 0), "block")
        nb = len(unet.up_blocks)
        for j, blk in enumerate(unet.up_blocks):
            b, n = nb - 1 - j, len(blk.resnets)
            for i, m in enumerate(blk.resnets):
                self._wrap(m, ("up", b, n - 1 - i))
            for i, m in enumerate(getattr(blk, "attentions", None) or []):
                self._wrap(m, ("up", b, n - 1 - i), "attn")
            for m in blk.upsamplers or []:
                self._wrap(m, ("up", b, 0), "us")
            self._wrap(blk, ("up", b, 0), "block")

    def _next(self, module, args):
        self.step += 1

    def skip(self, kind: str, b: int, layer: int) -> bool:
        if self.step % self.interval == 0:
            return False
        if kind == "mid" or b > self.block:
            return True
        if b < self.block:
            return False
        return layer >= self.layer if kind == "down" else layer > self.layer

    def _wrap(self, module, index, part="layer"):
        key, orig = index + (part,), module.forward

        def forward(*args, **kwargs):
            if self.skip(*index):
                return self.kept[key]
            out = orig(*args, **kwargs)
            self.kept[key] = out
            return out

        module.forward = forward
        self.handles.append((module, orig))

    def remove(self):
        self.handles[0].remove()
        for module, orig in self.handles[1:]:
            module.forward = orig


def adaptive_reference(predict, sched, x, threshold: float, max_skip: int, guidance: float):
    """AdaptiveDiffusion's skipping rule (UniModal4Reasoning/AdaptiveDiffusion,
    acceleration/sparse_pipeline.py), transcribed for one sample (the official pipeline applies it
    to its whole batch): the noise prediction is computed at steps 0-3; after step i >= 3 with
    d_i = mean|x_i - x_{i-1}|, the next step reuses the last prediction when
    |(d_i + d_{i-2}) / 2 - d_{i-1}| <= threshold * d_{i-1}, unless the last `max_skip` decisions
    (once more than 4 exist) were all reuses. `predict(x, t)` gives the guided prediction.
    Returns (final latents, list of per-step "ran the model" flags)."""
    prev, diffs, mask, ran, eps = [], [], [], [], None
    for i, t in enumerate(sched.timesteps):
        if len(prev) <= 3:
            eps = predict(x, t)
            ran.append(True)
            if len(prev) > 1:
                diffs.append((prev[-1] - prev[-2]).abs().mean())
        elif mask[-1]:
            eps = predict(x, t)
            ran.append(True)
        else:
            ran.append(False)
        x = sched.step(eps, t, x).prev_sample
        if len(prev) >= 3:
            cur = (x - prev[-1]).abs().mean()
            prev_d, prev_prev_d = diffs[-1], diffs[-2]
            diffs.append(cur)
            if len(mask) > 4 and not any(mask[-max_skip:]):
                mask.append(True)
            else:
                mask.append(not bool(abs((cur + prev_prev_d) / 2 - prev_d) <= prev_d * threshold))
        prev.append(x)
    return x, ran


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


def tgate_reference(unet, sched, x, cond, uncond, guidance: float, gate_step: int, sp_interval: int = 5,
                    fi_interval: int = 1, warm_up: int = 2):
    """T-GATE's sampling loop (HaozheLiu-ST/T-GATE, tgate/SD.py with tgate_utils.tgate_scheduler
    and tgate_processor), transcribed for a batch with classifier-free guidance: each attention
    layer's forward is replaced (as the official register_forward does) by one that returns the
    layer's cache when its kind is reused, else computes its output and, when told to cache,
    keeps it (whole, or at the gate step the mean of the unconditional and conditional halves).
    Steps i < gate_step - 1: CFG batch; cross-attention computed; self-attention computed before
    `warm_up`, computed and cached at `warm_up` and at every multiple of `sp_interval` after it,
    reused otherwise. Step gate_step - 1: CFG batch, both kinds computed and cached as half means.
    Steps after: the unconditional states alone, no guidance, cross-attention reused,
    self-attention computed and cached at multiples of `fi_interval`, reused otherwise."""
    mods = [m for m in unet.modules() if type(m).__name__ == "Attention"]
    state = dict(ca=(False, False), sa=(False, False), keep=True)
    originals = {}

    def wrap(mod):
        orig = mod.forward
        originals[mod] = orig

        def forward(hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
            cross = encoder_hidden_states is not None
            cache_it, reuse = state["ca"] if cross else state["sa"]
            if reuse and getattr(mod, "tg_cache", None) is not None:
                return mod.tg_cache
            out = orig(hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kw)
            if cache_it:
                if state["keep"]:
                    mod.tg_cache = out
                else:
                    u, c = out.chunk(2)
                    mod.tg_cache = (u + c) / 2
            return out
        mod.forward = forward

    for mod in mods:
        mod.tg_cache = None
        wrap(mod)
    try:
        for i, t in enumerate(sched.timesteps):
            if i < gate_step - 1:
                state["ca"] = (False, False)
                if i < warm_up:
                    state["sa"] = (False, False)
                elif i == warm_up or i % sp_interval == 0:
                    state["sa"] = (True, False)
                else:
                    state["sa"] = (False, True)
                state["keep"] = True
            elif i == gate_step - 1:
                state.update(ca=(True, False), sa=(True, False), keep=False)
            else:
                state["ca"] = (False, True)
                state["sa"] = (True, False) if i % fi_interval == 0 else (False, True)
                state["keep"] = True
            if i < gate_step:
                out = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
                u, c = out.chunk(2)
                eps = u + guidance * (c - u)
            else:
                eps = unet(x, t, encoder_hidden_states=uncond).sample
            x = sched.step(eps, t, x).prev_sample
    finally:
        for mod, orig in originals.items():
            mod.forward = orig
            del mod.tg_cache
    return x
