"""Two compilations of the same graphs side by side: each model folder's AOTInductor packages
(and the TorchScript graph they were checked against) timed on the same inputs, interleaved, in
one process. What it answers: does a package's compile setting (`-march=x86-64-v3`, the default
model's committed packages, vs `native`, what `convert_aoti.py` builds by default) change its
speed on this machine?

  python experiments/export/convert_aoti.py --model models/fmnist --out out/models/fmnist-native \\
      --graphs encoder,decoder --recompile
  python experiments/bench/bench_packages.py models/fmnist out/models/fmnist-native --rows 32

Prints, per graph and folder, the median seconds per call over `--repeats` interleaved rounds
of `--calls` calls each (after one untimed round), and the ratio to the first folder.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def inputs(manifest: dict, graph: str, rows: int, g: torch.Generator) -> list[torch.Tensor]:
    """Batched inputs of a 2-D UNet export's `encoder` or `decoder` graph (fd's call layout)."""
    h, w = manifest["sample_size"]
    emb = torch.randn(rows, manifest["time_embed_dim"], generator=g)
    cond = torch.randn(rows, manifest["cond"]["seq_len"], manifest["cond"]["dim"], generator=g)
    if graph == "encoder":
        return [torch.randn(rows, manifest["in_channels"], h, w, generator=g), emb, cond]
    if graph == "decoder":
        skips = [torch.randn(rows, *s, generator=g) for s in manifest["skip_shapes"]]
        return [torch.randn(rows, *manifest["mid_shape"], generator=g), emb, cond, *skips]
    raise SystemExit(f"--graphs {graph}: this bench builds inputs for encoder and decoder")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs=2, type=Path, help="two model folders with packages of the same graphs")
    ap.add_argument("--graphs", default="encoder,decoder")
    ap.add_argument("--rows", type=int, default=32, help="batch rows per call (32: the baseline's CFG batch of 16)")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    manifests = [json.loads((m / "manifest.json").read_text()) for m in a.models]
    g = torch.Generator().manual_seed(0)
    for graph in a.graphs.split(","):
        x = inputs(manifests[0], graph, a.rows, g)
        runners = {}
        for m, man in zip(a.models, manifests):
            pk = [p for p in man["graphs"][graph].get("packages", []) if p["batch"][0] <= a.rows <= p["batch"][1]]
            if not pk:
                raise SystemExit(f"{m}: no package of `{graph}` covers {a.rows} rows")
            runners[f"{m} ({pk[0].get('march', '?')})"] = torch._inductor.aoti_load_package(str(m / pk[0]["file"]))
        ts = torch.jit.load(str(a.models[0] / manifests[0]["graphs"][graph]["file"]))
        runners["TorchScript"] = getattr(ts, manifests[0]["graphs"][graph]["method"])
        times: dict[str, list[float]] = {k: [] for k in runners}
        with torch.no_grad():
            for r in range(a.repeats + 1):
                for k, f in runners.items():
                    t0 = time.perf_counter()
                    for _ in range(a.calls):
                        f(*x)
                    if r:  # round 0 warms up
                        times[k].append((time.perf_counter() - t0) / a.calls)
        first = statistics.median(next(iter(times.values())))
        print(f"{graph} at {a.rows} rows, {torch.get_num_threads()} threads, median of {a.repeats} rounds:")
        for k, v in times.items():
            med = statistics.median(v)
            print(f"  {k}: {med * 1e3:.2f} ms/call ({med / first:.3f} of the first; range "
                  f"{min(v) * 1e3:.2f}-{max(v) * 1e3:.2f})")


if __name__ == "__main__":
    main()
