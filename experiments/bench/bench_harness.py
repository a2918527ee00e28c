"""Rust harness vs the Python diffusers loop, side by side on the same exported model and machine.

Python side: the eager diffusers `UNet2DConditionModel` rebuilt from the model folder (the
manifest's `unet_config` + the weights stored in `unet.pt`), diffusers' `DDIMScheduler` from the
manifest's scheduler config, classifier-free guidance with the [uncond, cond] batch — the loop of
diffusers' StableDiffusionPipeline, without text/VAE; the same loop with the UNet under
`torch.compile` (inductor, compiled in the untimed warm-up). Rust side: `fd bench --plans none`
(the same baseline loop through the exported TorchScript graphs) and, when the model folder has
AOTInductor packages (experiments/export/convert_aoti.py), `none#aoti` in the same fd process.
Everything times only the denoising loop, after an untimed warm-up, with the same seeds, classes,
batch and thread count; repeats are interleaved and medians are reported as ratios.

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


def rust_loop(fd: str, model: Path, n: int, steps: int, cfg: float, seed: int, aoti: bool) -> list[float]:
    """fd's baseline loop in one process: TorchScript, then (with `aoti`) the AOTInductor packages;
    seconds per image of each."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [fd, "bench", "--model", str(model), "--plans", "none#torchscript,none#aoti" if aoti else "none#torchscript", "--n", str(n),
               "--repeats", "1", "--steps", str(steps), "--cfg", str(cfg), "--seed", str(seed), "--out", d]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return [r["median_s_per_image"] for r in json.loads((Path(d) / "bench.json").read_text())["rows"]]


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
    aoti = any(g.get("packages") for g in manifest["graphs"].values())
    compiled = torch.compile(unet)
    python_loop(unet, cond, manifest, 1, 2, a.cfg, a.seed)  # warm-up
    python_loop(compiled, cond, manifest, a.n, 2, a.cfg, a.seed)  # compiles at the timed shape
    py, pc, rs, ra = [], [], [], []
    for r in range(a.repeats):
        py.append(python_loop(unet, cond, manifest, a.n, a.steps, a.cfg, a.seed))
        pc.append(python_loop(compiled, cond, manifest, a.n, a.steps, a.cfg, a.seed))
        fd_rows = rust_loop(a.fd, a.model, a.n, a.steps, a.cfg, a.seed, aoti)
        rs.append(fd_rows[0])
        if aoti:
            ra.append(fd_rows[1])
        print(f"repeat {r + 1}/{a.repeats}: python eager {py[-1]:.4f}, torch.compile {pc[-1]:.4f}, fd {rs[-1]:.4f}"
              + (f", fd aoti {ra[-1]:.4f}" if aoti else "") + " s/img", file=sys.stderr)
    mp, mc, mr = statistics.median(py), statistics.median(pc), statistics.median(rs)
    ma = statistics.median(ra) if aoti else None
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    load = os.getloadavg()
    a.out.mkdir(parents=True, exist_ok=True)
    rec = dict(model=manifest["name"], n=a.n, steps=a.steps, cfg=a.cfg, repeats=a.repeats, python_s_per_image=py,
               python_compile_s_per_image=pc, rust_s_per_image=rs, rust_aoti_s_per_image=ra, median_python=mp,
               median_python_compile=mc, median_rust=mr, median_rust_aoti=ma, ratio_rust_over_python=mr / mp,
               ratio_rust_aoti_over_python=ma / mp if aoti else None,
               ratio_rust_aoti_over_compile=ma / mc if aoti else None,
               target="fd with AOTInductor <= 0.80 x Python eager and <= 1.00 x Python torch.compile",
               torch=torch.__version__, threads=torch.get_num_threads(), load_average_at_end=load,
               machine=dict(cpu=cpu, cores=os.cpu_count(), platform=platform.platform()),
               command=" ".join(sys.argv), date=datetime.date.today().isoformat())
    (a.out / "bench.json").write_text(json.dumps(rec, indent=2))
    rows = [("Python: diffusers UNet2DConditionModel (eager) + DDIMScheduler", mp),
            ("Python: the same UNet under torch.compile (inductor)", mc),
            ("fd: TorchScript graphs via libtorch + fd-sched DDIM", mr)]
    if aoti:
        rows.append(("fd: AOTInductor packages via libtorch (`--format aoti`)", ma))
    md = (f"# Rust harness vs Python diffusers loop\n\nModel `{manifest['name']}`, DDIM-{a.steps}, CFG {a.cfg}, "
          f"batch {a.n}, {a.repeats} interleaved repeats (median), denoising loop only, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads. Machine: {cpu} ({os.cpu_count()} cores); load average at the end "
          f"{load[0]:.2f}.\nCommand: `{' '.join(sys.argv)}`\n\n"
          f"| loop | s/image | ratio to Python eager | ratio to torch.compile |\n|---|---|---|---|\n"
          + "".join(f"| {k} | {v:.4f} | {v / mp:.2f} | {v / mc:.2f} |\n" for k, v in rows)
          + (f"\nTargets: fd with AOTInductor <= 0.80 x eager -> {'met' if ma / mp <= 0.8 else 'NOT met'} "
             f"({ma / mp:.2f}); <= 1.00 x torch.compile -> {'met' if ma / mc <= 1.0 else 'NOT met'} ({ma / mc:.2f}).\n"
             if aoti else "\nNo AOTInductor packages in the model folder (experiments/export/convert_aoti.py).\n"))
    (a.out / "bench.md").write_text(md)
    print(md)


if __name__ == "__main__":
    cli.run(main)
