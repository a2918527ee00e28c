"""Re-export an fd model folder with token merging (ToMe, PyPI tomesd 0.1.3) in its UNet graphs.

  python experiments/export/export_tome.py --model models/fmnist --out out/models/fmnist-tome \
      --ratio 0.5 --max-downsample 4

The UNet is rebuilt from the folder's unet_config + unet_weights.safetensors (written by exports
since 2026-12-01), patched with tomesd (fixed partition, see fd_export.tome) and traced again through
the same export code; the other graphs (cond_encoder, vae_decoder), tokenizer files and the
classifier are copied unchanged with their manifest entries. For a Stable Diffusion folder use
`export_sd.py --tome RATIO` instead. Settings (tomesd's knobs and defaults):
  --ratio R            fraction of tokens merged, in [0, 1 - 1/(sx*sy)]
  --max-downsample D   merge in layers downsampled at most D times the latent size (1, 2, 4, 8)
  --stride SXxSY       destination stride (default 2x2)
  --merge attn[,crossattn,mlp]  which sub-layers merge (default attn)
"""
from __future__ import annotations

import argparse
import json

from fd_export import cli
from fd_export.export import export_tome
from fd_export.tome import settings_from, tome_args


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="fd model folder with unet_weights.safetensors")
    ap.add_argument("--out", required=True)
    tome_args(ap)
    args = ap.parse_args()
    m, old = export_tome(args.model, args.out, settings_from(args.ratio, args))
    print(json.dumps(dict(name=m["name"], tome=m["tome"],
                          gflops={k: m["graphs"][k]["flops"] / 1e9 for k in ("encoder", "decoder")},
                          was={k: old["graphs"][k]["flops"] / 1e9 for k in ("encoder", "decoder")}), indent=2))


if __name__ == "__main__":
    cli.run(main)
