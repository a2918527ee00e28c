"""Add TeaCache's indicator graph (`teacache_probe`: the first resnet's timestep-modulated input,
fd_export.methods.teacache.TeaCacheProbe) and its rescaling polynomial to an existing fd export that keeps
its UNet weights, e.g. the committed default model, without touching its other graph files.

  python experiments/add/add_teacache.py --model models/fmnist
  python experiments/add/add_teacache.py --model my-sd-export --coefficients 0,0,0,1,0

Without --coefficients the polynomial is fitted on the model (fd_export.methods.teacache.teacache_fit: DDIM-50
baseline trajectories with CFG 3, 20 samples; class-conditioned exports); the fit's settings and
R^2 are written beside the coefficients under manifest `teacache`. `fd sample --keys teacache:T`
uses them. FBCache (`fbcache:T`) needs no extra graph: its first block, conv_in, is the first skip
of any DeepCache shallow encoder (add_deepcache.py --ids 0).
"""
from __future__ import annotations

import argparse
import json

from fd_export import cli
from fd_export.methods.teacache import add_teacache_graph


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cpu", help="trace on this device (the export's own, e.g. cuda for a float16 export)")
    ap.add_argument("--coefficients", default=None,
                    help="comma-separated polynomial coefficients, highest power first (default: fit on the model)")
    args = ap.parse_args()
    coef = None
    if args.coefficients is not None:
        try:
            coef = [float(c) for c in args.coefficients.split(",")]
        except ValueError:
            raise SystemExit(f"--coefficients `{args.coefficients}`: expected numbers like 0,0,0,1,0") from None
    try:
        m = add_teacache_graph(args.model, coef, device=args.device)
    except ValueError as e:
        raise SystemExit(f"{args.model}: {e}") from e
    print(json.dumps(m["teacache"], indent=1))


if __name__ == "__main__":
    cli.run(main)
