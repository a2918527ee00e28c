"""Add DeepCache graphs for DeepCache's own `cache_branch_id`s (horseee/DeepCache: block = id // 3,
layer = id % 3; the official default is 0) to an existing fd export that keeps its UNet weights,
e.g. the committed default model, without touching its other graph files.

  python experiments/add/add_deepcache.py --model models/fmnist --ids 0

The graphs go into deepcache.pt; manifest.json lists them under `deepcache` as `id{N}` (and records
the id each older block-level branch equals). New exports (export_unet.py / export_sd.py) write
id 0 by default.
"""
from __future__ import annotations

import argparse
import json

from fd_export import cli
from fd_export.methods.deepcache import add_deepcache_graphs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", default="0", help="comma-separated cache_branch_ids")
    args = ap.parse_args()
    try:
        m = add_deepcache_graphs(args.model, [int(i) for i in args.ids.split(",")])
    except ValueError as e:
        raise SystemExit(f"{args.model}: {e}") from e
    print(json.dumps(m["deepcache"], indent=1))


if __name__ == "__main__":
    cli.run(main)
