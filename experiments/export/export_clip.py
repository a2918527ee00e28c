"""Export CLIP image and text towers from a local transformers checkpoint for fd's CLIP score
(nothing is downloaded; what is written and how fd preprocesses: fd_export/clip.py).

  python experiments/export/export_clip.py --checkpoint /path/to/clip-vit-base-patch32 --out models/clip-b32
"""
import argparse
import json

from fd_export import cli
from fd_export.clip import export_clip


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    print(json.dumps(export_clip(args.checkpoint, args.out), indent=2))


if __name__ == "__main__":
    cli.run(main)
