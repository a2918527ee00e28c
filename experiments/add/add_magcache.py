"""Calibrate MagCache's magnitude ratios for a DiT export and write them under manifest `magcache`
(`fd sample --keys magcache:T[:K[:R]]` reads them; they are part of a run's identity). The ratios
come from the export's own TorchScript step-cache graphs (no weights needed, so the committed
models/fmnist-dit calibrates too), with diffusers' calibration formula
(`MagCacheConfig(calibrate=True)`: per step the mean over rows and tokens of ||r_i|| / ||r_(i-1)||,
r = the residual the transformer blocks add), on DDIM baseline trajectories with CFG, one sample
per call, averaged over --samples samples (classes 0, 1, ...). New exports (export_dit.py) are calibrated already.

  python experiments/add/add_magcache.py --model models/fmnist-dit [--steps 50] [--guidance 3] [--samples 8]
"""
from __future__ import annotations

import argparse
import json

from fd_export import cli
from fd_export.methods.magcache import add_magcache


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a DiT export folder (manifest kind `dit`, with stepcache.pt)")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps of the calibration run (default 50)")
    ap.add_argument("--guidance", type=float, default=3.0, help="CFG scale of the calibration run (default 3)")
    ap.add_argument("--samples", type=int, default=8, help="samples averaged, classes 0, 1, ... (default 8)")
    ap.add_argument("--seed", type=int, default=1000)
    args = ap.parse_args()
    if args.steps < 2 or args.samples < 1 or not args.guidance >= 0:
        ap.error("--steps must be >= 2, --samples >= 1 and --guidance >= 0")
    m = add_magcache(args.model, steps=args.steps, guidance=args.guidance, samples=args.samples, seed=args.seed)
    print(json.dumps(m["magcache"], indent=1))


if __name__ == "__main__":
    cli.run(main)
