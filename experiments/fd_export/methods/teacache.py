"""TeaCache (Liu et al. 2024): the probe graph of a UNet's first block's timestep-modulated input,
the per-model rescaling polynomial fit, and adding both to an export."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from torch import nn

from ..flops import DTYPES, count_flops
from ..folder import load_unet, sha256, write_manifest
from ..graphs import TimeEmbed
from ..tracing import trace_methods


# ---------------------------------------------------------------------------------------------
# TeaCache's indicator on a UNet (ali-vilab/TeaCache measures the first transformer block's
# timestep-modulated input, norm1(x) * (1 + scale(t)) + shift(t)). A UNet's first block is
# down_blocks[0].resnets[0], where the time embedding enters: with diffusers' default
# `time_embedding_norm` it is added after conv1 (the probe is conv1(silu(norm1(h))) + proj(emb),
# the tensor norm2 receives); with `scale_shift` it is norm2(h) * (1 + scale) + shift, as TeaCache's.
#   teacache_probe  sample [B,C,H,W], emb [B,E] -> modulated input [B,C0,H,W]
# ---------------------------------------------------------------------------------------------
class TeaCacheProbe(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.conv_in = unet.conv_in
        r = unet.down_blocks[0].resnets[0]
        if r.upsample is not None or r.downsample is not None or r.time_emb_proj is None:
            raise ValueError("TeaCache probe: the first resnet resamples or takes no time embedding")
        if r.time_embedding_norm not in ("default", "scale_shift"):
            raise ValueError(f"TeaCache probe: time_embedding_norm `{r.time_embedding_norm}` is not modulated by t")
        self.resnet = r

    def forward(self, sample, emb):
        r = self.resnet
        h = r.conv1(r.nonlinearity(r.norm1(self.conv_in(sample))))
        temb = emb if r.skip_time_act else r.nonlinearity(emb)
        temb = r.time_emb_proj(temb)[:, :, None, None]
        if r.time_embedding_norm == "scale_shift":
            scale, shift = torch.chunk(temb, 2, dim=1)
            return r.norm2(h) * (1 + scale) + shift
        return h + temb


TEACACHE_FILE = "teacache.pt"


def teacache_fit(probe, forward, guide, shape: Sequence[int], cond_of, null_id: int, scheduler_config: dict,
                 steps: int = 50, guidance: float = 3.0, classes: Sequence[int] = tuple(range(10)) * 2,
                 seed: int = 1000, degree: int = 4, device: str = "cpu") -> dict:
    """TeaCache's rescaling polynomial for a model (the TeaCache paper fits, per model, the model
    output's relative L1 change between consecutive steps against the indicator's): DDIM baseline
    trajectories of `classes` with CFG, per sample and step i >= 1 the pair (rel-L1 of the
    indicator, rel-L1 of the model output) over the sample's two CFG rows, fitted by numpy.polyfit
    (coefficients highest power first, as TeaCache's np.poly1d). The model enters through
    `probe(x2, t2, c2)` (the indicator), `forward(x2, t2, c2)` (the output) and
    `guide(out, guidance)` (the guided noise prediction), on [uncond; cond] batches whose
    conditioning `cond_of(ids)` builds; `shape` is one sample's (C, H, W); the trajectories run on
    `device` (the noise is drawn on the CPU)."""
    import numpy as np
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config({k: v for k, v in scheduler_config.items() if not k.startswith("_")})
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    rel = lambda a, b: ((a - b).abs().flatten(1).mean(1) / b.abs().flatten(1).mean(1)).cpu().numpy()  # noqa: E731
    xs, ys = [], []
    with torch.no_grad():
        n = len(classes)
        x = torch.randn((n, *shape), generator=g).to(device)
        c2 = torch.cat([cond_of([null_id] * n), cond_of(list(classes))])
        prev_p = prev_o = None
        for t in sched.timesteps:
            x2 = torch.cat([x, x])
            tt = t.expand(2 * n).float().to(device)
            p = probe(x2, tt, c2)
            out = forward(x2, tt, c2)
            # per sample over its two rows: [uncond r; cond r] -> [n, 2, ...]
            pp = torch.stack(p.chunk(2), 1)
            oo = torch.stack(out.chunk(2), 1)
            if prev_p is not None:
                xs.append(rel(pp, prev_p))
                ys.append(rel(oo, prev_o))
            prev_p, prev_o = pp, oo
            x = sched.step(guide(out, guidance), t, x).prev_sample
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    coef = np.polyfit(xs, ys, degree)
    fitted = np.poly1d(coef)(xs)
    r2 = 1.0 - float(((ys - fitted) ** 2).sum() / ((ys - ys.mean()) ** 2).sum())
    return dict(coefficients=[float(c) for c in coef],
                fit=dict(sampler="ddim", steps=steps, guidance=guidance, samples=len(classes), seed=seed,
                         points=int(len(xs)), r2=round(r2, 4), indicator_range=[float(xs.min()), float(xs.max())]))


def unet_teacache_fit(unet, cond_encoder, null_id: int, scheduler_config: dict, **kw) -> dict:
    """teacache_fit on a class-conditioned 2-D UNet: indicator = graphs.TeaCacheProbe."""
    probe = TeaCacheProbe(unet).eval()

    def indicator(x2, tt, c2):
        return probe(x2, unet.time_embedding(unet.time_proj(tt).to(x2.dtype)))

    def guide(out, guidance):
        u, c = out.chunk(2)
        return u + guidance * (c - u)

    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return teacache_fit(indicator, lambda x2, tt, c2: unet(x2, tt, encoder_hidden_states=c2).sample, guide,
                        (unet.config.in_channels, *size), lambda ids: cond_encoder(torch.tensor(ids)), null_id,
                        scheduler_config, **kw)


def add_teacache_graph(model_dir: str, coefficients: Sequence[float] | None = None, device: str = "cpu") -> dict:
    """Add TeaCache's indicator graph (`teacache_probe`, graphs.TeaCacheProbe) to an existing
    export that keeps its UNet weights, in its own file (teacache.pt), and its rescaling
    polynomial under manifest `teacache`: `coefficients` as given, else fitted on the model
    (teacache_fit; class-conditioned exports with a cond_encoder graph)."""

    with open(os.path.join(model_dir, "manifest.json")) as f:
        if json.load(f).get("tome"):
            raise ValueError(f"{model_dir}: a ToMe export keeps no UNet weights to trace from; add the graphs to the "
                             "model it was exported from")
    unet, m = load_unet(model_dir)
    if m.get("kind", "unet2d") != "unet2d":
        raise ValueError(f"{model_dir}: TeaCache's UNet probe needs a 2-D UNet (kind {m.get('kind')}; a DiT gets its "
                         "TeaCache / FBCache graphs from export_dit.py)")
    dtype = DTYPES[m["dtype"]]
    if coefficients is None:
        if m["cond"].get("kind") != "class" or "cond_encoder" not in m["graphs"]:
            raise ValueError(f"{model_dir}: fitting TeaCache's polynomial needs a class-conditioned export; "
                             "pass --coefficients C4,C3,C2,C1,C0 (e.g. 0,0,0,1,0 for no rescaling)")
        cond_encoder = torch.jit.load(os.path.join(model_dir, m["graphs"]["cond_encoder"]["file"]), map_location="cpu")
        spec = unet_teacache_fit(unet.float(), cond_encoder, m["cond"]["null_id"], m["scheduler"])
    else:
        spec = dict(coefficients=[float(c) for c in coefficients], fit=None)
    unet = unet.to(device=device, dtype=dtype)
    probe = TeaCacheProbe(unet)
    h, w = m["sample_size"]
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, m["in_channels"], h, w, generator=g).to(device, dtype)
    with torch.no_grad():
        emb = TimeEmbed(unet)(torch.tensor([500.0], device=device))
    path = os.path.join(model_dir, TEACACHE_FILE)
    trace_methods({"teacache_probe": (probe, [sample, emb])}, path)
    m["graphs"]["teacache_probe"] = dict(file=TEACACHE_FILE, method="teacache_probe", sha256=sha256(path),
                                         flops=count_flops(probe, [sample, emb]))
    m["teacache"] = spec
    write_manifest(model_dir, m)
    return m
