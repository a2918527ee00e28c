"""Graph variants of one exported model, timed interleaved on the same inputs: the encoder and decoder
graphs as traced (unfrozen, as exports were before 2026-12-01), frozen (what fd exports now), frozen +
torch.jit.optimize_for_inference, and the eager diffusers UNet in NCHW vs channels-last memory format.

    python experiments/bench/bench_graph_variants.py --unfrozen DIR_OF_AN_UNFROZEN_EXPORT --model models/fmnist --out results/graph-variants/DATE-MACHINE

--unfrozen: a copy of the model folder before freezing (e.g. `git show 78c2522:models/fmnist/unet.pt`), or
omit it to trace-load --model and compare against its own frozen graphs only.
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from fd_export import cli
from fd_export.folder import eager_unet

warnings.filterwarnings("ignore")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/fmnist")
    ap.add_argument("--unfrozen", help="unet.pt of the same model saved unfrozen")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    d = Path(a.model)
    frozen = torch.jit.load(str(d / "unet.pt")).eval()
    ce = torch.jit.load(str(d / "cond_encoder.pt")).eval()
    meths = ["time_embed", "encoder", "decoder"]
    variants = {"frozen (fd's export)": frozen}
    if a.unfrozen:
        variants["traced, unfrozen"] = torch.jit.load(a.unfrozen).eval()
        variants["frozen + optimize_for_inference"] = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.load(a.unfrozen).eval(), preserved_attrs=meths), other_methods=meths)
    R = a.rows
    torch.manual_seed(0)
    x, t = torch.randn(R, 1, 28, 28), torch.full((R,), 500.0)
    with torch.no_grad():
        emb = frozen.time_embed(t)
        cond = ce(torch.arange(R) % 10)
        f = frozen.encoder(x, emb, cond)
        mid, skips = f[0], list(f[1:])
        ref = frozen.decoder(mid, emb, cond, *skips)
    unet, _, _ = eager_unet(d)
    ucl = copy.deepcopy(unet).to(memory_format=torch.channels_last)
    eager = {"eager diffusers, NCHW": (unet, x), "eager diffusers, channels-last": (ucl, x.contiguous(memory_format=torch.channels_last))}
    times = {k: [] for k in list(variants) + list(eager)}
    diffs = {}
    with torch.no_grad():
        for k, m in variants.items():  # warm-up + output check
            o = m.decoder(*m.encoder(x, emb, cond)[:1], emb, cond, *m.encoder(x, emb, cond)[1:])
            diffs[k] = (o - ref).abs().max().item()
        for _k, (m, xi) in eager.items():
            m(xi, torch.tensor(500.0), encoder_hidden_states=cond)
        for r in range(a.rounds):
            order = list(times) if r % 2 == 0 else list(reversed(times))
            for k in order:
                t0 = time.perf_counter()
                for _ in range(3):
                    if k in variants:
                        m = variants[k]
                        fe = m.encoder(x, emb, cond)
                        m.decoder(fe[0], emb, cond, *fe[1:])
                    else:
                        m, xi = eager[k]
                        m(xi, torch.tensor(500.0), encoder_hidden_states=cond)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    os.makedirs(a.out, exist_ok=True)
    md = (f"# Graph variants, encoder + decoder at {R} rows, 3 calls per round, median of {a.rounds} interleaved rounds\n\n"
          f"torch {torch.__version__}, {torch.get_num_threads()} threads. Command: `{' '.join(sys.argv)}`\n\n"
          "| variant | s per 3 calls | vs frozen / vs eager NCHW | max abs diff of the decoder output vs frozen |\n|---|---|---|---|\n")
    for k, v in med.items():
        base = med["eager diffusers, NCHW"] if k.startswith("eager") else med["frozen (fd's export)"]
        md += f"| {k} | {v:.3f} | {100 * (v / base - 1):+.1f}% | {diffs.get(k, float('nan')):.1e} |\n"
    Path(a.out, "variants.md").write_text(md)
    Path(a.out, "variants.json").write_text(json.dumps(dict(rows=R, rounds=a.rounds, median_s=med, times_s=times, diffs=diffs), indent=2))
    print(md)


if __name__ == "__main__":
    cli.run(main)
