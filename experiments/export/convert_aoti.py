"""Compile AOTInductor packages for an fd export's graphs (issue 33): `torch.export` + AOTInductor
`.pt2` packages beside the TorchScript files, listed in manifest.json; `fd ... --format aoti` runs
them.

  python experiments/export/convert_aoti.py --model models/fmnist [--out DIR] [--graphs encoder,decoder]

A 2-D UNet export is rebuilt from its weights, a DiT export from weights recovered from its
frozen graphs (fd_export.recover). Each package is compiled for this machine's device (--device)
and torch release, with a dynamic
batch dimension (1..--max-batch rows), and checked against the export's TorchScript graph before
the manifest lists it. Needs a C++ compiler (g++); about a minute per graph on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from fd_export import cli
from fd_export.aoti import MAX_BATCH, convert


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="fd model folder")
    ap.add_argument("--out", help="write a converted copy here (default: add the packages to --model)")
    ap.add_argument("--graphs", help="comma-separated graph names, or `all` (default: the loop's graphs: "
                                     "time_embed, encoder, decoder, decoder_analysis (a DiT: encoder, decoder, "
                                     "decoder_analysis); `all` adds a UNet's DeepCache, TeaCache and T-GATE graphs)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]: the device the packages will run on")
    ap.add_argument("--max-batch", type=int, default=MAX_BATCH, help="most rows per graph call")
    ap.add_argument("--recompile", action="store_true",
                    help="compile graphs whose listed packages already run here too (default: keep them)")
    ap.add_argument("--march", help="a CPU package's -march (default: inductor's, `native`, code for this CPU "
                                    "model); `x86-64-v3` runs on every AVX2 x86-64 CPU (the default model's "
                                    "committed packages)")
    ap.add_argument("--tol", type=float,
                    help="parity tolerance against the TorchScript graph, relative to the output's scale "
                         "(default 1e-5 for a float32 export, 1e-2 for float16)")
    args = ap.parse_args()
    tol = args.tol
    if tol is None:
        with open(os.path.join(args.model, "manifest.json")) as f:
            tol = 1e-2 if json.load(f).get("dtype") == "float16" else 1e-5
    t0 = time.time()
    m = convert(args.model, args.out, args.graphs.split(",") if args.graphs else None, args.device, args.max_batch,
                tol, march=args.march, recompile=args.recompile)
    packaged = {k: [p["file"] for p in g["packages"]] for k, g in m["graphs"].items() if g.get("packages")}
    print(json.dumps(dict(model=m["name"], packages=packaged, seconds=round(time.time() - t0, 1)), indent=2))


if __name__ == "__main__":
    cli.run(main)
