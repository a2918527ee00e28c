"""Per-row cost of one decoder (and encoder) call against the number of rows in the call, on the
exported TorchScript graphs: why uncapped parallel decoding is slow on a CPU
(docs/results/drift-speed.md, "Drift and sampling speed").

  python experiments/bench/bench_decoder_rows.py [--model models/fmnist] [--rows 32,64,96,160,288,480]
      [--out results/bench-decoder-rows/<date>-<machine>]

Batch-1 features of one sample are tiled to each row count (the values do not change the cost);
each size is timed over at least `--min-rows` rows after one untimed call, sizes interleaved over
`--repeats` rounds, median reported. Writes rows.md / rows.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import torch

from fd_export import cli


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/fmnist")
    ap.add_argument("--rows", default="32,64,96,160,288,480")
    ap.add_argument("--min-rows", type=int, default=960, help="rows timed per size and round (calls = this / rows)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds over all sizes; the median is reported")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    machine = os.environ.get("FD_MACHINE") or f"{os.cpu_count()}core-{platform.machine()}"
    out = args.out or f"results/bench-decoder-rows/{datetime.date.today()}-{machine}"
    with open(os.path.join(args.model, "manifest.json")) as f:
        man = json.load(f)
    unet = torch.jit.load(os.path.join(args.model, man["graphs"]["decoder"]["file"])).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, man["in_channels"], *man["sample_size"], generator=g)
    c = torch.randn(1, man["cond"]["seq_len"], man["cond"]["dim"], generator=g)
    res = []
    with torch.no_grad():
        emb = unet.time_embed(torch.tensor([500.0]))
        feats = unet.encoder(x, emb, c)

        def timed(fn, n):
            fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - t0) / n

        sizes = [int(r) for r in args.rows.split(",")]
        times = {r: ([], []) for r in sizes}
        for _ in range(args.repeats):
            for rows in sizes:
                tile = lambda t: t.expand(rows, *t.shape[1:]).contiguous()  # noqa: E731
                f, e, cc, xx = [tile(t) for t in feats], tile(emb), tile(c), tile(x)
                n = max(1, args.min_rows // rows)
                times[rows][0].append(timed(lambda: unet.decoder(f[0], e, cc, *f[1:]), n) / rows)
                times[rows][1].append(timed(lambda: unet.encoder(xx, e, cc), n) / rows)
        for rows in sizes:
            dec, enc = (sorted(v)[len(v) // 2] for v in times[rows])
            res.append(dict(rows=rows, decoder_ms_per_row=1e3 * dec, encoder_ms_per_row=1e3 * enc,
                            decoder_ms_per_row_all=[1e3 * v for v in times[rows][0]]))
            print(f"rows {rows:4d}: decoder {res[-1]['decoder_ms_per_row']:.3f} ms/row, encoder {res[-1]['encoder_ms_per_row']:.3f} ms/row")
    os.makedirs(out, exist_ok=True)
    info = dict(model=man["name"], torch=torch.__version__, threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                command="python experiments/bench/bench_decoder_rows.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None))
    with open(os.path.join(out, "rows.json"), "w") as f:
        json.dump(dict(info, rows=res), f, indent=2)
    md = [f"# Per-row cost of one graph call vs rows per call\n\nModel `{info['model']}`, torch {info['torch']}, "
          f"{info['threads']} threads, CPU, median of {args.repeats} interleaved rounds. Command: `{info['command']}`\n",
          "| rows per call | decoder ms/row | encoder ms/row |", "|---|---|---|"]
    md += [f"| {r['rows']} | {r['decoder_ms_per_row']:.3f} | {r['encoder_ms_per_row']:.3f} |" for r in res]
    with open(os.path.join(out, "rows.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    cli.run(main)
