"""Export CLIP image and text towers from a local transformers checkpoint for fd's CLIP score
(nothing is downloaded; users bring e.g. openai/clip-vit-base-patch32 or ViT-L/14).

  python experiments/export_clip.py --checkpoint /path/to/clip-vit-base-patch32 --out models/clip-b32

Writes clip.pt (one TorchScript module, methods `encode_image(pixel_values [B,3,S,S])` and
`encode_text(input_ids [B,L])`, both -> projected embeddings [B,P]), tokenizer.json and
clip_manifest.json (image size, normalisation mean/std, max length, pad id, SHA-256).
fd preprocesses images with torch ops: [-1,1] -> [0,1], bicubic (antialiased) resize of the short
side to S, centre crop S, normalise — named `torch-bicubic-aa` in reports (transformers' processor
uses PIL's bicubic; the two differ slightly).
"""
import argparse
import json

from fd_export.clip import export_clip


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    print(json.dumps(export_clip(args.checkpoint, args.out), indent=2))


if __name__ == "__main__":
    main()
