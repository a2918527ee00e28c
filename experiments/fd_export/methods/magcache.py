"""MagCache (Ma et al. 2025, Zehong-Ma/MagCache; diffusers' `MagCacheConfig` / `apply_mag_cache`)
on a DiT: the per-model magnitude ratios (calibration), the skip schedule they give, and the
reference run of diffusers' own hook that fd's `magcache:T[:K[:R]]` is tested against.

MagCache's observation: the norm of the residual the transformer blocks add to their input
(`||blocks(h0) - h0||` per token) changes by a nearly model-specific factor from one step to the
next. Calibration records, per step, the mean over rows and tokens of ||r_i|| / ||r_{i-1}||
(1 for step 0): the model's `mag_ratios`. Sampling multiplies the ratios of the steps since the
last computed one; while the accumulated error sum |1 - prod| stays within `threshold` and at
most `max_skip_steps` steps were skipped in a row, a step reuses the last computed residual
(h0 + r); the first `retention_ratio` of the steps always compute. The schedule depends on the
ratios only, never on a sample: every sample of a run computes the same steps.

fd fits the ratios from an export's own TorchScript step-cache graphs (no weights needed, so the
committed DiT can be calibrated) with diffusers' calibration formula (`_perform_calibration_step`),
averaged over several samples; `experiments/add/add_magcache.py` writes them under manifest
`magcache`, part of a run's identity.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import torch

from ..errors import ExportError
from ..folder import sha256, write_manifest


def residual_ratio(current: torch.Tensor, previous: torch.Tensor | None, channel_dim: int) -> float:
    """diffusers' calibration step: mean over rows and tokens of the residuals' norm ratio (norm
    over the hidden channels), 1.0 without a previous residual."""
    if previous is None:
        return 1.0
    cur = torch.linalg.norm(current.float(), dim=channel_dim)
    prev = torch.linalg.norm(previous.float(), dim=channel_dim)
    return (cur / (prev + 1e-8)).mean().item()


def calibrate(step_residual: Callable, guide: Callable, shape: Sequence[int], cond_of, null_id: int,
              scheduler_config: dict, steps: int = 50, guidance: float = 3.0,
              classes: Sequence[int] = tuple(range(8)), seed: int = 1000, channel_dim: int = 1) -> dict:
    """The magnitude ratios of a class-conditional model: per sample (its two CFG rows
    [uncond; cond] in one call, as diffusers' DiTPipeline batches them), a DDIM-`steps` baseline
    trajectory; `step_residual(x2, t2, c2)` returns (the blocks' residual, the model output);
    per step diffusers' calibration ratio; averaged over the samples. Returns the manifest's
    `magcache` section."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config({k: v for k, v in scheduler_config.items() if not k.startswith("_")})
    g = torch.Generator().manual_seed(seed)
    per_sample = []
    with torch.no_grad():
        for cls in classes:
            sched.set_timesteps(steps)
            x = torch.randn((1, *shape), generator=g)
            c2 = torch.cat([cond_of([null_id]), cond_of([cls])])
            prev, ratios = None, []
            for t in sched.timesteps:
                res, out = step_residual(torch.cat([x, x]), t.expand(2).float(), c2)
                ratios.append(residual_ratio(res, prev, channel_dim))
                prev = res
                x = sched.step(guide(out, guidance), t, x).prev_sample
            per_sample.append(ratios)
    r = torch.tensor(per_sample, dtype=torch.float64)
    return dict(mag_ratios=[round(float(v), 6) for v in r.mean(0)],
                fit=dict(sampler="ddim", steps=steps, guidance=guidance, samples=len(classes), seed=seed,
                         spread=round(float(r.std(0).max()), 6) if len(classes) > 1 else 0.0,
                         formula="diffusers.hooks.mag_cache: mean ||r_i|| / ||r_(i-1)||, averaged over samples"))


def nearest_interp(ratios: Sequence[float], n: int) -> list[float]:
    """diffusers' `nearest_interp` (float32 grid, round half to even): the ratios resampled to n steps."""
    src = torch.tensor(list(ratios), dtype=torch.float32)
    if n == 1:
        return src[-1:].tolist()
    scale = (len(src) - 1) / (n - 1)
    idx = torch.round(torch.arange(n, dtype=torch.float32) * scale).long()
    return src[idx].tolist()


def schedule(mag_ratios: Sequence[float], n: int, threshold: float = 0.06, max_skip_steps: int = 3,
             retention_ratio: float = 0.2) -> list[bool]:
    """Which of n steps compute, as diffusers' MagCacheHeadHook decides (transcribed; float32
    accumulation as its tensor arithmetic)."""
    r = torch.tensor(list(mag_ratios), dtype=torch.float32)
    if len(r) != n:
        r = torch.tensor(nearest_interp(r.tolist(), n), dtype=torch.float32)
    retention = int(retention_ratio * n + 0.5)
    ratio, skipped, err = torch.tensor(1.0), 0, torch.tensor(0.0)
    have_residual, out = False, []
    for i in range(n):
        compute = True
        if i >= retention:
            ratio = ratio * r[i]
            skipped += 1
            err = err + (1.0 - ratio).abs()
            if have_residual and bool(err <= threshold) and skipped <= max_skip_steps:
                compute = False
            else:
                ratio, skipped, err = torch.tensor(1.0), 0, torch.tensor(0.0)
        have_residual = have_residual or compute
        out.append(compute)
    return out


def diffusers_reference(tr, sched, x, labels2, guidance: float, mag_ratios, threshold: float, max_skip_steps: int,
                        retention_ratio: float, guidance_channels=None):
    """diffusers' own MagCache hook (`apply_mag_cache`, `num_inference_steps` = the run's) on a
    DiTTransformer2DModel (fd_export.methods.hooks.dit_hook_reference): (final latents, per-step
    computed flags)."""
    from diffusers.hooks.mag_cache import MagCacheConfig, apply_mag_cache

    from .hooks import dit_hook_reference

    cfg = MagCacheConfig(threshold=threshold, max_skip_steps=max_skip_steps, retention_ratio=retention_ratio,
                         num_inference_steps=len(sched.timesteps), mag_ratios=list(mag_ratios))
    return dit_hook_reference(tr, lambda m: apply_mag_cache(m, cfg), sched, x, labels2, guidance, guidance_channels)


def export_calibration(model_dir: str, manifest: dict | None = None, samples: int = 8, **kw) -> dict:
    """`calibrate` on a DiT export's own TorchScript graphs (time_embed, cond_encoder and the
    step-cache graphs: stepcache.pt), after checking their hashes against the manifest (read
    from the folder unless given: export_dit calibrates before writing it), over `samples`
    samples of classes 0, 1, ... (cycling)."""
    m = manifest
    if m is None:
        with open(os.path.join(model_dir, "manifest.json")) as f:
            m = json.load(f)
    if m.get("kind") != "dit":
        raise ExportError(f"{model_dir}: a {m.get('kind', 'unet2d')} export; MagCache is fd's on DiT exports "
                          "(its paper and diffusers' hook skip a transformer's blocks)")
    need = ["time_embed", "cond_encoder", "stepcache_embed", "stepcache_first", "stepcache_rest", "stepcache_head"]
    missing = [g for g in need if g not in m["graphs"]]
    if missing:
        raise ExportError(f"{model_dir}: no {', '.join(missing)} graph(s): export the DiT again with "
                          "experiments/export/export_dit.py (it writes the step-cache graphs)")
    device = m.get("export_device") or "cpu"
    dtype = {"float32": torch.float32, "float16": torch.float16}[m.get("dtype", "float32")]
    mods = {}
    for g in need:
        e = m["graphs"][g]
        path = os.path.join(model_dir, e["file"])
        if e["file"] not in mods:
            if sha256(path) != e["sha256"]:
                raise ExportError(f"{path}: SHA-256 differs from the manifest's (graph {g})")
            mods[e["file"]] = torch.jit.load(path, map_location=device).eval()
    call = lambda g, *a: getattr(mods[m["graphs"][g]["file"]], m["graphs"][g].get("method", "forward"))(*a)  # noqa: E731

    def step_residual(x2, t2, c2):  # on the export's device and dtype; results in float32 on the CPU
        emb = call("time_embed", t2.to(device)).to(dtype)
        x2, c2 = x2.to(device, dtype), c2.to(device, dtype)
        h0, _ = call("stepcache_embed", x2, emb, c2)
        h = call("stepcache_rest", call("stepcache_first", h0, emb, c2), emb, c2)
        return (h - h0).float().cpu(), call("stepcache_head", h, emb, c2).float().cpu()

    cin, gch = int(m["in_channels"]), m.get("guidance_channels")

    def guide(out, guidance):
        u, c = out[:, :cin].chunk(2)
        g = min(gch or cin, cin)
        return torch.cat([u[:, :g] + guidance * (c[:, :g] - u[:, :g]), c[:, g:]], 1)

    h, w = m["sample_size"]
    cond = m["cond"]
    return calibrate(step_residual, guide, (cin, h, w),
                     lambda ids: call("cond_encoder", torch.tensor(ids, device=device)).float().cpu(),
                     int(cond["null_id"]), m["scheduler"],
                     classes=tuple(i % int(cond["num_classes"]) for i in range(samples)), **kw)


def add_magcache(model_dir: str, **kw) -> dict:
    """Calibrate `model_dir` (export_calibration) and write its manifest's `magcache` section
    (manifest rewritten last, temp + rename). Returns the new manifest."""
    section = export_calibration(model_dir, **kw)
    with open(os.path.join(model_dir, "manifest.json")) as f:
        m = json.load(f)
    m["magcache"] = section
    write_manifest(model_dir, m)
    return m
