"""Rust harness vs the Python diffusers loop, side by side on the same exported model and machine.

Python side: the eager diffusers `UNet2DConditionModel` rebuilt from the model folder (the
manifest's `unet_config` + the weights stored in `unet.pt`), diffusers' `DDIMScheduler` from the
manifest's scheduler config, classifier-free guidance with the [uncond, cond] batch — the loop of
diffusers' StableDiffusionPipeline, without text/VAE. Rust side: `fd bench --plans none` (the same
baseline loop through the exported graphs). Both time only the denoising loop, after one untimed
warm-up, with the same seeds, classes, batch and thread count; repeats are interleaved and the
median is reported as a ratio.

    python experiments/bench/bench_harness.py --model models/fmnist --n 16 --repeats 3 --out results/bench-harness/DATE-MACHINE
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fd_export import cli
from fd_export.folder import eager_unet


def python_loop(unet, cond_enc, manifest, n: int, steps: int, cfg: float, seed: int) -> float:
    """Seconds per image of the denoising loop (diffusers DDIM + CFG), batch n."""
    import diffusers

    sched = diffusers.DDIMScheduler.from_config(manifest["scheduler"])
    sched.set_timesteps(steps)
    c, (h, w) = manifest["in_channels"], manifest["sample_size"]
    classes = manifest["cond"]["num_classes"]
    latents = torch.cat([torch.randn((1, c, h, w), generator=torch.Generator().manual_seed(seed + i)) for i in range(n)])
    with torch.no_grad():
        ids = torch.tensor([i % classes for i in range(n)])
        cond = cond_enc(ids)
        uncond = cond_enc(torch.full((n,), manifest["cond"]["null_id"]))
        ctx = torch.cat([uncond, cond])
        t0 = time.perf_counter()
        for t in sched.timesteps:
            x = torch.cat([latents, latents])
            eps = unet(x, t, encoder_hidden_states=ctx).sample
            u, co = eps.chunk(2)
            eps = u + cfg * (co - u)
            latents = sched.step(eps, t, latents).prev_sample
        dt = time.perf_counter() - t0
    return dt / n


def rust_loop(fd: str, model: Path, n: int, steps: int, cfg: float, seed: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        cmd = [fd, "bench", "--model", str(model), "--plans", "none", "--n", str(n), "--repeats", "1",
               "--steps", str(steps), "--cfg", str(cfg), "--seed", str(seed), "--out", d]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads((Path(d) / "bench.json").read_text())["rows"][0]["median_s_per_image"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("models/fmnist"))
    ap.add_argument("--fd", default="target/release/fd")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if not Path(a.fd).is_file():
        raise SystemExit(f"--fd {a.fd}: not found (cargo build --release -p fd-cli)")
    unet, cond, manifest = eager_unet(a.model)
    python_loop(unet, cond, manifest, 1, 2, a.cfg, a.seed)  # warm-up
    py, rs = [], []
    for r in range(a.repeats):
        py.append(python_loop(unet, cond, manifest, a.n, a.steps, a.cfg, a.seed))
        rs.append(rust_loop(a.fd, a.model, a.n, a.steps, a.cfg, a.seed))
        print(f"repeat {r + 1}/{a.repeats}: python {py[-1]:.4f} s/img, rust {rs[-1]:.4f} s/img", file=sys.stderr)
    mp, mr = statistics.median(py), statistics.median(rs)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    a.out.mkdir(parents=True, exist_ok=True)
    rec = dict(model=manifest["name"], n=a.n, steps=a.steps, cfg=a.cfg, repeats=a.repeats, python_s_per_image=py,
               rust_s_per_image=rs, median_python=mp, median_rust=mr, ratio_rust_over_python=mr / mp,
               target="rust <= 0.8 x python", torch=torch.__version__, threads=torch.get_num_threads(),
               machine=dict(cpu=cpu, cores=os.cpu_count(), platform=platform.platform()),
               command=" ".join(sys.argv), date=datetime.date.today().isoformat())
    (a.out / "bench.json").write_text(json.dumps(rec, indent=2))
    md = (f"# Rust harness vs Python diffusers loop\n\nModel `{manifest['name']}`, DDIM-{a.steps}, CFG {a.cfg}, "
          f"batch {a.n}, {a.repeats} interleaved repeats (median), denoising loop only, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads. Machine: {cpu} ({os.cpu_count()} cores).\n"
          f"Command: `{' '.join(sys.argv)}`\n\n"
          f"| harness | s/image | ratio to Python |\n|---|---|---|\n"
          f"| Python: diffusers UNet2DConditionModel (eager) + DDIMScheduler | {mp:.4f} | 1.00 |\n"
          f"| Rust: fd (TorchScript graphs via libtorch) + fd-sched DDIM | {mr:.4f} | {mr / mp:.2f} |\n\n"
          f"Target: Rust <= 0.8 x Python -> {'met' if mr / mp <= 0.8 else 'NOT met'}.\n")
    (a.out / "bench.md").write_text(md)
    print(md)


if __name__ == "__main__":
    cli.run(main)
