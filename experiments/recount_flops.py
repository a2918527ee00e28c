"""Recount the per-graph FLOPs of an fd export from its TorchScript graphs and update manifest.json.

  python experiments/recount_flops.py MODEL_DIR [--check]

Counts with export_unet.count_flops' convention (torch.utils.flop_counter, 2 x MACs, batch 1,
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

import torch

from fd_export import flop_counter_mode

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def recount(model_dir: str) -> dict[str, tuple[int, int]]:
    """{graph: (manifest flops, recounted flops)} for every graph of the export."""
    with open(os.path.join(model_dir, "manifest.json")) as f:
        m = json.load(f)
    dtype = DTYPES[m["dtype"]]
    files: dict[str, torch.jit.ScriptModule] = {}

    def graph(key):
        g = m["graphs"][key]
        if g["file"] not in files:
            files[g["file"]] = torch.jit.load(os.path.join(model_dir, g["file"]), map_location="cpu").eval()
        mod = files[g["file"]]
        return getattr(mod, g["method"]) if g.get("method", "forward") != "forward" else mod

    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, m["in_channels"], *m["sample_size"], generator=g).to(dtype)
    cond = torch.randn(1, m["cond"]["seq_len"], m["cond"]["dim"], generator=g).to(dtype)
    t = torch.tensor([500.0])
    out: dict[str, int] = {}

    def count(key, *inputs):
        with flop_counter_mode() as fc, torch.no_grad():
            res = graph(key)(*inputs)
        out[key] = int(fc.get_total_flops())
        return res

    emb = count("time_embed", t)
    feats = count("encoder", sample, emb, cond)
    for key in ("decoder", "decoder_analysis"):
        if key in m["graphs"]:
            count(key, feats[0], emb, cond, *feats[1:])
    if "full" in m["graphs"]:
        count("full", sample, t, cond)
    for b in m.get("deepcache", {}):
        shallow = count(f"deepcache{b}_shallow_encoder", sample, emb, cond)
        cached = count(f"deepcache{b}_deep_decoder", feats[0], emb, cond, *feats[1:])
        count(f"deepcache{b}_shallow_decoder", cached, emb, cond, *shallow)
    if "cond_encoder" in m["graphs"]:
        c = m["cond"]
        ids = torch.zeros(1, dtype=torch.long) if c["kind"] == "class" else torch.zeros(1, c["seq_len"], dtype=torch.long)
        count("cond_encoder", ids)
    if "vae_decoder" in m["graphs"]:
        count("vae_decoder", sample)
    missing = set(m["graphs"]) - set(out)
    if missing:
        raise SystemExit(f"{model_dir}: no example inputs for graphs {sorted(missing)}")
    return {k: (int(m["graphs"][k]["flops"]), v) for k, v in out.items()}


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
    main()
