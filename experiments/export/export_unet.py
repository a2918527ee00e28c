"""Export the default model from a train_fmnist.py checkpoint into a model folder (split TorchScript
graphs + manifest.json; see fd_export.graphs for the graphs and fd_export.export for the manifest).
For Stable Diffusion folders use export_sd.py.

  python experiments/export/export_unet.py --checkpoint ~/.cache/fd/train/fmnist/checkpoint.pt --out models/fmnist
"""
from __future__ import annotations

import argparse
import json

from fd_export import cli
from fd_export.fmnist import export_fmnist_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="train_fmnist.py checkpoint (exports the EMA weights)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--with-full", action="store_true", help="also export the unsplit reference graph")
    ap.add_argument("--format", choices=["torchscript", "aoti"], default="torchscript",
                    help="aoti: also compile AOTInductor packages of every graph (fd_export.aoti; needs g++, "
                         "about a minute per graph); fd runs them with --format aoti")
    args = ap.parse_args()
    if not args.checkpoint:
        ap.error("--checkpoint is required (for Stable Diffusion folders use export_sd.py)")
    m = export_fmnist_checkpoint(args.checkpoint, args.out, with_full=args.with_full, aoti=args.format == "aoti")
    print(json.dumps({k: m[k] for k in ("name", "graphs", "params")}, indent=2))


if __name__ == "__main__":
    cli.run(main)
