"""Count per-graph FLOPs of the Stable Diffusion 1.5 UNet architecture (random init from its config;
no weights needed) at 512 px (64x64 latents), batch 1, with torch.utils.flop_counter (2 x MACs), split
exactly as fd_export splits it. Writes experiments/configs/sd15_flops.json, which the GFLOPs
check in crates/fd-sched/tests/flops.rs reads.

  python experiments/bench/flops_sd15.py
"""
import json
import os
import time

import torch
from diffusers import UNet2DConditionModel

from fd_export import cli, count_flops, n_params
from fd_export.graphs import Decoder, Encoder, TimeEmbed
from fd_export.sd import SD15_UNET

EXPERIMENTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    torch.manual_seed(0)
    t0 = time.time()
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    x, t, c = torch.randn(1, 4, 64, 64), torch.tensor([500.0]), torch.randn(1, 77, 768)
    te, enc, dec = TimeEmbed(unet), Encoder(unet), Decoder(unet)
    with torch.no_grad():
        emb = te(t)
        feats = enc(x, emb, c)
    out = dict(
        model="stable-diffusion-1.5 UNet architecture (random init), 512 px, batch 1",
        convention="torch.utils.flop_counter: FLOPs = 2 x MACs over mm/conv/bmm/SDPA",
        unet_config=SD15_UNET,
        flops=dict(time_embed=count_flops(te, [t]), encoder=count_flops(enc, [x, emb, c]),
                   decoder=count_flops(dec, [feats[0], emb, c, *feats[1:]])),
        params=dict(time_embed=n_params(te), encoder=n_params(enc), decoder=n_params(dec)),
        torch=torch.__version__, seconds=round(time.time() - t0, 1),
    )
    path = os.path.join(EXPERIMENTS, "configs", "sd15_flops.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2, default=list)
        f.write("\n")
    print(json.dumps(out["flops"]), out["params"])


if __name__ == "__main__":
    cli.run(main)
