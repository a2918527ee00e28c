"""Export a local DeepFloyd-IF stage I diffusers folder for fd (nothing is downloaded).

  python experiments/export/export_if.py --checkpoint /path/to/IF-I-XL-v1.0 --out models/if-i-xl \
      [--device cuda --dtype float16]

Pixel-space split UNet with a learned-range variance output, the T5 prompt encoder (users bring
it: the folder's text_encoder/), cond_prepare (T5 states -> added time embedding + projected
attention states) and the DDPM scheduler config (learned_range, dynamic thresholding). Prompts are
lowercased and stripped as the pipeline does with clean_caption=False. Stage II is not covered.
"""
from __future__ import annotations

import argparse
import json

from fd_export import cli
from fd_export.deepfloyd_if import export_if
from fd_export.forms import UnsupportedConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="local diffusers IF stage I folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "float16"])
    ap.add_argument("--format", choices=["torchscript", "aoti"], default="torchscript",
                    help="aoti: also compile AOTInductor packages of every graph (UNet, T5 encoder) for --device, "
                         "each checked against its TorchScript graph (fd_export.aoti, needs g++); fd runs them "
                         "with --format aoti")
    args = ap.parse_args()
    try:
        m = export_if(args.checkpoint, args.out, args.device, args.dtype, aoti=args.format == "aoti")
    except UnsupportedConfig as e:
        raise SystemExit(f"{args.checkpoint}/unet/config.json: {e}") from e
    print(json.dumps({k: m[k] for k in ("name", "family", "dtype", "params")}, indent=2))


if __name__ == "__main__":
    cli.run(main)
