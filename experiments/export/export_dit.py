"""Export a DiT for fd (nothing is downloaded): a local diffusers DiTPipeline folder (transformer/,
vae/, scheduler/; e.g. facebook/DiT-XL-2-256 saved by the user), or the default Fashion-MNIST DiT
from a train_dit.py checkpoint.

  python experiments/export/export_dit.py --checkpoint /path/to/DiT-XL-2-256 --out models/dit-xl-2-256 \
      [--split 18] [--guidance-channels 3] [--device cuda --dtype float16]
  python experiments/export/export_dit.py --train-checkpoint ~/.cache/fd/train/fmnist-dit/checkpoint.pt --out models/fmnist-dit

The encoder is the patch embedding and the first --split transformer blocks (default: the authors'
18 of 28, scaled to the model's depth); a key step caches their output tokens, the decoder (the
other blocks + the final layer) runs at every step with its own timestep. --guidance-channels 3
guides only the first 3 latent channels as the original DiT code and FasterDiffusion-DiT do
(diffusers' DiTPipeline guides all 4). Learned sigma is kept: fd's DDPM with
variance_type=learned_range consumes it, the other samplers drop it (as diffusers).
"""
from __future__ import annotations

import argparse
import json

from fd_export import cli


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="local diffusers DiTPipeline folder")
    src.add_argument("--train-checkpoint", help="train_dit.py checkpoint (the default DiT; exports the EMA weights)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", type=int, help="transformer blocks in the encoder (default: round(blocks * 18 / 28))")
    ap.add_argument("--guidance-channels", type=int, help="guide only the first N latent channels (DiT code: 3)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--with-full", action="store_true", help="also export the unsplit reference graph")
    ap.add_argument("--no-stepcache", action="store_true",
                    help="leave out the TeaCache / FBCache graphs and TeaCache's polynomial fit (20 DDIM-50 CFG "
                         "trajectories on --device)")
    ap.add_argument("--format", choices=["torchscript", "aoti"], default="torchscript",
                    help="aoti: also compile AOTInductor packages of every graph for --device (fd_export.aoti; "
                         "needs g++); fd runs them with --format aoti")
    args = ap.parse_args()
    aoti = args.format == "aoti"
    try:
        if args.train_checkpoint:
            from fd_export.fmnist import export_fmnist_dit_checkpoint

            m = export_fmnist_dit_checkpoint(args.train_checkpoint, args.out, with_full=args.with_full,
                                             with_stepcache=not args.no_stepcache, aoti=aoti)
        else:
            from fd_export.dit import export_dit_folder

            m = export_dit_folder(args.checkpoint, args.out, args.device, args.dtype, split=args.split,
                                  guidance_channels=args.guidance_channels, with_stepcache=not args.no_stepcache,
                                  aoti=aoti)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"export_dit.py: {e}") from e
    print(json.dumps({k: m[k] for k in ("name", "kind", "split", "dtype", "params")}, indent=2))


if __name__ == "__main__":
    cli.run(main)
