"""What deciding per call over a whole batch (diffusers' FirstBlockCache hook) instead of per sample
(fd's `fbcache:T`) changes, on a diffusers DiT pipeline folder: each sample run alone through the
hook (one sample and its CFG rows per call: the decisions are that sample's), then the samples
together in one batch as DiTPipeline batches them ([uncond x B; cond x B] in one call: one decision
for all rows). Prints the computed steps of each arrangement, how many of each sample's steps the
batch decided differently, and how far each sample's batched result lies from its own.

  python experiments/bench/hook_batch_decisions.py --checkpoint target/fixtures/families/dit/checkpoint \\
      --threshold 0.086 [--steps 50] [--guidance 5] [--seeds 5,6] [--classes 207,360]
"""
from __future__ import annotations

import argparse
import copy

import torch

from fd_export import cli


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a diffusers DiT pipeline folder (transformer/, scheduler/)")
    ap.add_argument("--threshold", type=float, required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--seeds", default="5,6")
    ap.add_argument("--classes", default="207,360")
    args = ap.parse_args()
    from diffusers import DDIMScheduler, DiTTransformer2DModel
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    from fd_export.methods.hooks import fbcache_reference

    seeds = [int(s) for s in args.seeds.split(",")]
    classes = [int(c) for c in args.classes.split(",")]
    if len(seeds) != len(classes):
        raise SystemExit("--seeds and --classes: one class per seed")
    tr = DiTTransformer2DModel.from_pretrained(args.checkpoint, subfolder="transformer").eval()
    sched = DDIMScheduler.from_pretrained(args.checkpoint, subfolder="scheduler")
    cin, size = tr.config.in_channels, tr.config.sample_size
    null = tr.config.num_embeds_ada_norm
    noise = torch.cat([torch.randn((1, cin, size, size), generator=torch.Generator().manual_seed(s)) for s in seeds])
    alone = []
    for i, cls in enumerate(classes):
        sched.set_timesteps(args.steps)
        with torch.no_grad():
            alone.append(fbcache_reference(tr, sched, noise[i:i + 1].clone(), torch.tensor([null, cls]), args.guidance,
                                           args.threshold))
    batched = copy.deepcopy(tr)
    apply_first_block_cache(batched, FirstBlockCacheConfig(threshold=args.threshold))
    _set_cache_context(batched, CacheContext("cfg"))
    ran = []
    batched.transformer_blocks[-1].attn1.register_forward_hook(lambda *a: ran.append(True))
    sched.set_timesteps(args.steps)
    x, flags, n = noise.clone(), [], len(seeds)
    labels = torch.tensor([null] * n + classes)
    with torch.no_grad():
        for t in sched.timesteps:
            before = len(ran)
            out = batched(torch.cat([x, x]), timestep=t.expand(2 * n), class_labels=labels).sample
            flags.append(len(ran) > before)
            u, c = out[:, :cin].chunk(2)
            x = sched.step(u + args.guidance * (c - u), t, x).prev_sample
    print(f"FirstBlockCache T={args.threshold}, DDIM-{args.steps}, CFG {args.guidance}")
    print(f"computed steps, each sample alone: {[sum(f) for _, f in alone]}; the batch of {n}: {sum(flags)}")
    for i, (ref, f) in enumerate(alone):
        d = ((x[i:i + 1] - ref).abs().max() / ref.abs().max().clamp(min=1)).item()
        diff = sum(a != b for a, b in zip(flags, f))
        print(f"sample {i} (seed {seeds[i]}, class {classes[i]}): {diff} of {args.steps} steps decided differently in "
              f"the batch; batched result {d:.3g} (relative) from its own")


if __name__ == "__main__":
    cli.run(main)
