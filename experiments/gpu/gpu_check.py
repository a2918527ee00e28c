"""Compare `fd sample` output folders sample by sample (used by experiments/gpu/gpu_session.py).

  python experiments/gpu/gpu_check.py REF RUN [RUN ...] [--json OUT.json]

For each RUN against REF: whether the float samples (parts/*.safetensors, `samples`) are
bit-identical, their max |diff|, and how many PNG files differ byte for byte. Exits 0; the verdicts
are data for the report, not assertions (CPU vs CUDA is expected to differ in the last bits).
"""
from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np
from safetensors.numpy import load_file

from fd_export import cli


def samples(folder: str) -> np.ndarray:
    parts = sorted(p for p in glob.glob(os.path.join(folder, "parts", "*.safetensors"))
                   if ".inception-" not in os.path.basename(p))
    if not parts:
        raise SystemExit(f"{folder}: no parts/*.safetensors (not an fd sample folder?)")
    return np.concatenate([load_file(p)["samples"] for p in parts])


def pngs(folder: str) -> dict[str, bytes]:
    return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(os.path.join(folder, "*.png")))
            if os.path.basename(p)[:6].isdigit()}


def compare(ref: str, run: str) -> dict:
    a, b = samples(ref), samples(run)
    if a.shape != b.shape:
        return dict(run=run, ref=ref, error=f"shapes differ: {a.shape} vs {b.shape}")
    pa, pb = pngs(ref), pngs(run)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return dict(
        run=os.path.basename(run.rstrip("/")), ref=os.path.basename(ref.rstrip("/")), n=int(a.shape[0]),
        bit_identical=bool(np.array_equal(a.view(np.uint32), b.view(np.uint32))),
        max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
        png_differ=sum(pa[k] != pb.get(k) for k in pa), png_n=len(pa),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ref")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--json", help="append the rows to this JSON-lines file")
    args = ap.parse_args()
    for run in args.runs:
        row = compare(args.ref, run)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    cli.run(main)
