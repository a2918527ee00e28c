"""Recount the per-graph FLOPs of an fd export from its TorchScript graphs and update manifest.json.

  python experiments/bench/recount_flops.py MODEL_DIR [--check]

Counts with fd_export.count_flops' convention (fd_export.flops.recount) (torch.utils.flop_counter, 2 x MACs, batch 1,
attention included on every device) by running each graph of the manifest on example inputs built
from the manifest's shapes. The graph files and their sha256 are left as they are, so sampling
runs made with the model still resume. Use it on exports made before attention was counted on CPU
(fd before 2026-11-26 counted 0 FLOPs for SDPA on CPU exports). --check: change nothing, exit 1
if any count differs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from fd_export import cli
from fd_export.flops import recount


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--check", action="store_true", help="exit 1 if a count differs; write nothing")
    args = ap.parse_args()
    counts = recount(args.model_dir)
    changed = {k: v for k, v in counts.items() if v[0] != v[1]}
    for k, (old, new) in counts.items():
        note = f"  ({100 * (new / old - 1):+.1f}%)" if old and old != new else ("" if old == new else "  (was 0)")
        print(f"{k:32s} {old / 1e9:12.6f} -> {new / 1e9:12.6f} GFLOPs{note}")
    if args.check:
        sys.exit(1 if changed else 0)
    if changed:
        path = os.path.join(args.model_dir, "manifest.json")
        with open(path) as f:
            m = json.load(f)
        for k, (_, new) in changed.items():
            m["graphs"][k]["flops"] = new
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(m, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        print(f"updated {len(changed)} counts in {path}")
    else:
        print("manifest counts are current")


if __name__ == "__main__":
    cli.run(main)
