"""Add Pyramid Attention Broadcast's graphs (`pab_capture` / `pab_reuse`: the DiT's blocks with
every attention output captured or given, fd_export.methods.pab) to an existing default-DiT export
without touching its other graph files. New exports (export_dit.py) have them already; this is for
the committed models/fmnist-dit, whose frozen graphs hold no weights: they are read from the
train_dit.py checkpoint the export came from, and checked against the export's own encoder graph
before anything is written.

  python experiments/add/add_dit_pab.py --model models/fmnist-dit \\
      --train-checkpoint ~/.cache/fd/train/fmnist-dit/checkpoint.pt
"""
from __future__ import annotations

import argparse

from fd_export import cli


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a DiT export folder (manifest kind `dit`)")
    ap.add_argument("--train-checkpoint", required=True, help="the train_dit.py checkpoint it was exported from")
    args = ap.parse_args()
    from fd_export.fmnist import add_fmnist_dit_pab

    try:
        m = add_fmnist_dit_pab(args.train_checkpoint, args.model)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise SystemExit(f"add_dit_pab.py: {e}") from e
    print({k: m["graphs"][k] for k in ("pab_capture", "pab_reuse")})


if __name__ == "__main__":
    cli.run(main)
