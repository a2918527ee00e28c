"""Add T-GATE's graphs (HaozheLiu-ST/T-GATE: attention outputs cached and reused;
fd_export.methods.tgate.TGateUNet) to an existing 2-D UNet export that keeps its UNet weights, e.g. the
committed default model, without touching its other graph files.

  python experiments/add/add_tgate.py --model models/fmnist

The four graphs (capture, sa_reuse, ca_reuse, both_reuse) go into tgate.pt; manifest.json lists
the cached attention layers under `tgate`. `fd sample --keys tgate:G[:SP[:FI[:W]]]` runs them.
"""
from __future__ import annotations

import argparse
import json

from fd_export import cli
from fd_export.methods.tgate import add_tgate_graphs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cpu", help="trace on this device (the export's own, e.g. cuda for a float16 export)")
    args = ap.parse_args()
    try:
        m = add_tgate_graphs(args.model, device=args.device)
    except ValueError as e:
        raise SystemExit(f"{args.model}: {e}") from e
    print(json.dumps({k: m["tgate"][k] for k in ("cross_layers", "self_layers")}, indent=1))
    print({k: g["flops"] for k, g in m["graphs"].items() if k.startswith("tgate") or k in ("encoder", "decoder")})


if __name__ == "__main__":
    cli.run(main)
