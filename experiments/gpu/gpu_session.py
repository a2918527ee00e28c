"""Every prepared GPU check in one command (`just gpu`), within a time budget, into one report folder.

  python experiments/gpu/gpu_session.py [--fd target/release/fd] [--device cuda] [--budget 570]
      [--out out/gpu/DATE-MACHINE] [--work out/gpu-work] [--only SECTION,...] [--smoke]

Sections, in the order they run (the cheapest, most telling first; a section that the remaining
budget cannot hold is skipped and the report says so):

  env          `fd info` on the device (the binary loads libtorch's CUDA backend); with no visible
               GPU, `--device cuda` must be an error, not a CPU fallback; versions, GPU, driver.
  default      the default model on the device: CPU vs device, repeats, batch 16 vs 32, parallel vs
               sequential decoders (compared sample by sample by gpu_check.py), `fd bench` at 16 and 256.
  sd15         SD-1.5's exact architecture, random init, float16 (make_sd15_random.py): DDIM-50 at
               batch 1 and 8 (baseline, 50ls parallel / sequential, uniform:4, DeepCache N=3),
               DPM-Solver++-20 at batch 1, and `fd sample` end to end (512 px PNGs).
  sdxl         SDXL base 1.0's architecture at 1024 px, Euler-50, batch 1 and 4: baseline, 50ls, DeepCache.
  controlnet   SD-1.5 + ControlNet, DDIM-50, batch 1, an edge-grid condition: ControlNet at key steps only.
  dit          DiT-XL/2 256, DDPM-250, batch 1 and 8: baseline vs the paper's dit250 key steps.
  t2v          text-to-video-ms-1.7b (UNet3D, 16 frames, 256 px), DDIM-50, batch 1.
  aoti         the sd15 model's loop graphs compiled to AOTInductor packages for this device, TorchScript
               and AOTInductor side by side at batch 1 and 8 (issue 33).
  peers        T-GATE, TeaCache, FBCache, AdaptiveDiffusion on the sd15 model beside 50ls and DeepCache
               (random weights: their skip counts say nothing about a real model; the rows time the
               machinery).
  tome         Table 1's ToMe rows at SD-1.5 scale (ratio 0.5, tomesd's defaults).
  determinism  `--deterministic` repeats and batch sizes, parallel vs sequential, bit for bit.

Every model is random-init with the real architecture (no checkpoint needed; same shapes, FLOPs and
timings). The report folder (--out) gets summary.md / summary.json (each step's command, exit status,
seconds; each section's status), info.txt (environment), bench/*.md|json (every `fd bench` table),
compare.jsonl and logs/; it is rewritten after every step, so a run cut off by the machine's limit
still leaves a report. Models and sample folders go to --work (large; not part of the report).

--smoke: the same sections on the CPU with tiny widths and 64 px (`--tiny`), batches of at most 2
(the bench names say the batch), one timed repeat and no warm-up, float32; checks the plumbing in CI (crates/fd-cli/tests/gpu_session.rs), says nothing about speed.
The aoti section is skipped in smoke mode (compiling on a 2-core CPU takes minutes per graph).

The fd binary must be built against the libtorch of the python that runs this script (its torch lib
folder and NVIDIA libraries are put on LD_LIBRARY_PATH; docs/gpus.md: `scripts/build_for_libtorch.sh`).
The CLIP tokenizer folders (--tokenizer, and the same path + "-pad-bang" for SDXL) are built from
open_clip's vocabulary when missing; on a machine without open_clip, bring them (`--prepare` builds them; `just gpu-prepare`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from fd_export import cli

HERE = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS = os.path.dirname(HERE)
PROMPTS = "experiments/configs/bench_prompts.txt"
SECTIONS = ["env", "default", "sd15", "sdxl", "controlnet", "dit", "t2v", "aoti", "peers", "tome", "determinism"]
# Seconds a section needs on an H100 (estimates from the scripts' earlier runs and the models' sizes;
# a section starts only when the remaining budget holds this much).
NEEDS = dict(env=15, default=60, sd15=120, sdxl=120, controlnet=60, dit=90, t2v=60, aoti=150, peers=90, tome=60,
             determinism=60)


@dataclass
class Step:
    section: str
    name: str
    cmd: list[str]
    status: str = "pending"
    rc: int | None = None
    seconds: float = 0.0
    log: str = ""


@dataclass
class Session:
    args: argparse.Namespace
    env: dict
    t0: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)
    sections: dict = field(default_factory=dict)
    benches: list[str] = field(default_factory=list)
    made: set[str] = field(default_factory=set)
    current: str = ""

    @property
    def report(self) -> str:
        return self.args.out

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.t0)

    def run(self, section: str, name: str, cmd: list[str], env: dict | None = None) -> bool:
        """Runs one step (its output to logs/ and the terminal), within the remaining budget."""
        step = Step(section, name, [str(c) for c in cmd])
        self.steps.append(step)
        left = self.left()
        if left < 5:
            step.status = "skipped: budget spent"
            self.write()
            return False
        step.log = os.path.join("logs", f"{section}-{name}.log")
        print(f"+ [{section}] {shlex.join(step.cmd)}", flush=True)
        t = time.monotonic()
        with open(os.path.join(self.report, step.log), "w") as log:
            log.write(f"+ {shlex.join(step.cmd)}\n")
            log.flush()
            try:
                p = subprocess.Popen(step.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=dict(self.env, **(env or {})), text=True, errors="replace")
                timer = threading.Timer(left, p.kill)
                timer.start()
                for line in p.stdout:  # type: ignore[union-attr]
                    log.write(line)
                    print(f"  {line}", end="", flush=True)
                step.rc = p.wait()
                timed_out = not timer.is_alive()
                timer.cancel()
            except OSError as e:
                log.write(f"{e}\n")
                step.rc, timed_out = 127, False
        step.seconds = round(time.monotonic() - t, 1)
        step.status = "timed out (budget)" if timed_out else ("ok" if step.rc == 0 else f"failed (exit {step.rc})")
        self.write()
        return step.status == "ok"

    def expect_error(self, section: str, name: str, cmd: list[str], env: dict) -> bool:
        """A step that must fail (a clear error, not a fallback): ok when the command exits non-zero."""
        self.run(section, name, cmd, env)
        step = self.steps[-1]
        if step.rc not in (None, 0) and not step.status.startswith("timed out"):
            step.status = f"ok (failed as expected, exit {step.rc})"
        elif step.rc == 0:
            step.status = "failed: succeeded where an error was expected"
        self.write()
        return step.status.startswith("ok")

    def bench(self, section: str, name: str, *args: object) -> bool:
        """One `fd bench` run; its table is copied into bench/ at once."""
        a = self.args
        work = os.path.join(a.work, "bench", name)
        extra = ["--repeats", "1", "--max-spread", "100", "--warmup", "false"] if a.smoke else ["--repeats", str(a.repeats)]
        ok = self.run(section, name, [a.fd, "--log-level", "warn", "bench", "--device", a.device, *extra,
                                      *map(str, args), "--out", work])
        if ok:
            for ext in ("md", "json"):
                shutil.copy(os.path.join(work, f"bench.{ext}"), os.path.join(self.report, "bench", f"{name}.{ext}"))
            self.benches.append(name)
            self.write()
        return ok

    def python(self, section: str, name: str, script: str, *args: object) -> bool:
        return self.run(section, name, [sys.executable, os.path.join(EXPERIMENTS, script), *map(str, args)])

    def write(self) -> None:
        """summary.json and summary.md, rewritten after every step."""
        a = self.args
        doc = dict(device=a.device, smoke=a.smoke, budget_s=a.budget, elapsed_s=round(time.monotonic() - self.t0, 1),
                   fd=a.fd, sections=self.sections, steps=[s.__dict__ for s in self.steps], benches=self.benches)
        with open(os.path.join(self.report, "summary.json"), "w") as f:
            json.dump(doc, f, indent=1)
        lines = [f"# GPU session ({'CPU smoke test, tiny widths: no timing here means anything' if a.smoke else a.device})",
                 "", f"Command: `{shlex.join(sys.argv)}`  ", f"Budget {a.budget:.0f} s, elapsed {doc['elapsed_s']} s. "
                 "Environment: [info.txt](info.txt). Per step logs: logs/.", "", "| section | status | seconds |",
                 "|---|---|---|"]
        for name, sec in self.sections.items():
            lines.append(f"| {name} | {sec['status']} | {sec.get('seconds', '')} |")
        lines += ["", "| section | step | status | seconds | command |", "|---|---|---|---|---|"]
        for s in self.steps:
            cmd = shlex.join(s.cmd).replace("|", "\\|")
            lines.append(f"| {s.section} | {s.name} | {s.status} | {s.seconds} | `{cmd}` |")
        if os.path.exists(os.path.join(self.report, "compare.jsonl")):
            lines += ["", "## Sample-by-sample comparisons (compare.jsonl)", "", "```"]
            lines += open(os.path.join(self.report, "compare.jsonl")).read().splitlines()
            lines += ["```"]
        for b in self.benches:
            body = open(os.path.join(self.report, "bench", f"{b}.md")).read().split("\n", 1)[1]
            lines += ["", f"## {b}", body.strip()]
        with open(os.path.join(self.report, "summary.md"), "w") as f:
            f.write("\n".join(lines) + "\n")


def tokenizers(base: str) -> None:
    """The CLIP tokenizer folders the SD-family makers read: SD's (pad = EOS) and SDXL's second (pad "!")."""
    from make_sd15_random import tokenizer

    tokenizer(base)
    tokenizer(base + "-pad-bang", pad_token="!")
    print(f"tokenizers: {base}, {base}-pad-bang", flush=True)


def section_env(s: Session) -> bool:
    a = s.args
    ok = s.run("env", "fd-info", [a.fd, "info", "models/fmnist", "--device", a.device])
    s.python("env", "tokenizers", "gpu/gpu_session.py", "--prepare", "--tokenizer", a.tokenizer)
    s.expect_error("env", "no-visible-gpu", [a.fd, "info", "models/fmnist", "--device", "cuda"],
                   env=dict(CUDA_VISIBLE_DEVICES=""))
    return ok


def samples(s: Session, name: str, device: str, *extra: object, n: int | None = None) -> str:
    a = s.args
    out = os.path.join(a.work, "samples", name)
    n = n or (2 if a.smoke else 64)
    # TorchScript on every device: the comparisons are CPU vs device and batch vs batch, not format
    # vs format (the default model's CPU packages would run on the CPU under `--format auto`)
    s.run(s.current, name, [a.fd, "--log-level", "warn", "sample", "--model", "models/fmnist", "--steps", "50",
                            "--cfg", "3", "--n", str(n), "--overwrite", "--device", device, "--format", "torchscript",
                            *map(str, extra), "--out", out])
    return out


def compare(s: Session, name: str, ref: str, *runs: str) -> bool:
    return s.python(s.current, name, "gpu/gpu_check.py", ref, *runs, "--json", os.path.join(s.report, "compare.jsonl"))


def section_default(s: Session) -> bool:
    a = s.args
    big = 2 if a.smoke else 32  # smoke: 2 samples, batch 2 vs 1
    dev = samples(s, "device", a.device, "--batch", big)
    rep = samples(s, "device-repeat", a.device, "--batch", big)
    b16 = samples(s, "device-b16", a.device, "--batch", big // 2)
    ok = compare(s, "compare-device", dev, rep, b16)
    if a.device != "cpu":  # CPU vs the device (on a CPU-only smoke run there is nothing to compare)
        cpu = samples(s, "cpu", "cpu", "--batch", big)
        cpu50 = samples(s, "cpu-50ls", "cpu", "--batch", big, "--keys", "50ls")
        dev50 = samples(s, "device-50ls", a.device, "--batch", big, "--keys", "50ls")
        ok &= compare(s, "compare-cpu", cpu, dev)
        ok &= compare(s, "compare-cpu-50ls", cpu50, dev50)
    plans = "none,50ls,50ls@seq,uniform:3,deepcache:3"
    for n in ([2] if a.smoke else [16, 256]):
        ok &= s.bench("default", f"default_n{n}", "--model", "models/fmnist", "--plans", plans, "--n", n)
    return ok


def section_determinism(s: Session) -> bool:
    a = s.args
    n = 2 if a.smoke else 8
    det = ("--deterministic", "--batch")
    b8 = samples(s, "det-b8", a.device, *det, n, n=n)
    rep = samples(s, "det-b8-repeat", a.device, *det, n, n=n)
    b2 = samples(s, "det-b2", a.device, *det, 1 if a.smoke else 2, n=n)  # smoke: batch 2 vs 1
    par = samples(s, "det-50ls-par", a.device, *det, n, "--keys", "50ls", n=n)
    seq = samples(s, "det-50ls-seq", a.device, *det, n, "--keys", "50ls", "--sequential", n=n)
    return compare(s, "compare-det", b8, rep, b2) & compare(s, "compare-det-50ls", par, seq)


def batch(s: Session, n: int) -> int:
    """A bench's batch size: n on the device, 2 in smoke mode (the bench's name says which ran)."""
    return 2 if s.args.smoke else n


def make(s: Session, name: str, script: str, *args: object) -> str | None:
    """Exports a random-init model into the work folder, once: reused when this session made it, or when
    the work folder has it from an earlier session (unless --fresh)."""
    a = s.args
    out = os.path.join(a.work, "models", name)
    if name in s.made or (os.path.exists(os.path.join(out, "manifest.json")) and not a.fresh):
        print(f"[{s.current}] reusing {out}", flush=True)
        return out
    size = ["--tiny"] if a.smoke else ["--dtype", "float16"]
    ok = s.python(s.current, f"make-{name}", script, "--out", out, "--device", a.device, *size,
                  "--tokenizer", a.tokenizer, *args)
    if ok:
        s.made.add(name)
    return out if ok else None


def section_sd15(s: Session) -> bool:
    m = make(s, "sd15", "gpu/make_sd15_random.py", "--keep-weights")
    if m is None:
        return False
    p = ("--model", m, "--cfg", 7.5, "--prompts", PROMPTS, "--inject", "0.003@0.5")
    ok = True
    for b in (1, batch(s, 8)):
        ok &= s.bench("sd15", f"sd15_ddim_b{b}", *p, "--plans", "none,50ls,50ls@seq,uniform:4,deepcache:3", "--n", b)
    ok &= s.bench("sd15", "sd15_dpmpp_b1", *p, "--scheduler", "dpm++", "--steps", 20, "--plans", "none,50ls,50ls@seq",
                  "--n", 1)
    # End to end as a user's run: prompts, VAE decode to PNGs, run.json with UNet and total seconds per image.
    a = s.args
    n = batch(s, 8)
    for keys in ("none", "50ls"):
        out = os.path.join(a.work, "samples", f"sd15-{keys}")
        plan = ["--keys", keys, "--inject", "0.003@0.5"] if keys != "none" else []
        ok &= s.run("sd15", f"sample-{keys}", [a.fd, "--log-level", "warn", "sample", "--model", m, "--device",
                                               a.device, "--cfg", 7.5, "--prompts", PROMPTS, "--n", n, "--batch", n,
                                               "--overwrite", *plan, "--out", out])
        ok &= s.python("sd15", f"check-sample-{keys}", "gpu/gpu_session.py", "--check-sample", out, "--expect", n)
    return ok


def section_sdxl(s: Session) -> bool:
    m = make(s, "sdxl", "gpu/make_random_family.py", "--family", "sdxl")
    if m is None:
        return False
    s.run("sdxl", "fd-info", [s.args.fd, "info", m, "--device", s.args.device])
    ok = True
    for b in (1, batch(s, 4)):
        ok &= s.bench("sdxl", f"sdxl_b{b}", "--model", m, "--prompts", PROMPTS, "--scheduler", "euler", "--steps", 50,
                      "--cfg", 5, "--inject", "0.003@0.5", "--plans", "none,50ls,deepcache:3", "--n", b)
    return ok


def section_controlnet(s: Session) -> bool:
    m = make(s, "controlnet", "gpu/make_random_family.py", "--family", "controlnet")
    if m is None:
        return False
    edges = os.path.join(s.args.work, "edges.png")
    size = 64 if s.args.smoke else 512  # the image size of the (tiny) UNet: sample_size x 8
    s.python("controlnet", "edges", "gpu/gpu_session.py", "--edges", edges, "--size", size)
    return s.bench("controlnet", "controlnet_b1", "--model", m, "--prompts", PROMPTS, "--scheduler", "ddim",
                   "--steps", 50, "--cfg", 7.5, "--inject", "0.003@0.5", "--control", edges, "--plans", "none,50ls",
                   "--n", 1)


def section_dit(s: Session) -> bool:
    m = make(s, "dit", "gpu/make_random_family.py", "--family", "dit")
    if m is None:
        return False
    ok = True
    for b in (1, batch(s, 8)):
        ok &= s.bench("dit", f"dit_b{b}", "--model", m, "--classes", "207,360,387,974,88,979,417,279",
                      "--scheduler", "ddpm", "--steps", 250, "--cfg", 4, "--inject", "0.003@0.3:after",
                      "--plans", "none,dit250", "--n", b)
    return ok


def section_t2v(s: Session) -> bool:
    m = make(s, "t2v", "gpu/make_random_family.py", "--family", "t2v")
    if m is None:
        return False
    frames = 2 if s.args.smoke else 16
    return s.bench("t2v", "t2v_b1", "--model", m, "--prompts", PROMPTS, "--frames", frames, "--scheduler", "ddim",
                   "--steps", 50, "--cfg", 9, "--inject", "0.003@0.5", "--plans", "none,50ls", "--n", 1)


def sd15_model(s: Session) -> str | None:
    """The sd15 section's model (aoti and peers add to it)."""
    return make(s, "sd15", "gpu/make_sd15_random.py", "--keep-weights")


def section_aoti(s: Session) -> bool:
    m = sd15_model(s)
    if m is None:
        return False
    # a converted copy: the other sections' model stays package-free (fd's default `--format
    # auto` would run packages it lists)
    pm = m.rstrip("/") + "-aoti"
    shutil.rmtree(pm, ignore_errors=True)
    if not s.python("aoti", "convert", "export/convert_aoti.py", "--model", m, "--out", pm, "--device", s.args.device):
        return False
    p = ("--model", pm, "--cfg", 7.5, "--prompts", PROMPTS, "--inject", "0.003@0.5", "--plans",
         "none#torchscript,none#aoti,50ls#torchscript,50ls#aoti")
    b = batch(s, 8)
    return s.bench("aoti", "aoti_b1", *p, "--n", 1) & s.bench("aoti", f"aoti_b{b}", *p, "--n", b)


def section_peers(s: Session) -> bool:
    m = sd15_model(s)
    dev = s.args.device
    if m is None or not (s.python("peers", "add-tgate", "add/add_tgate.py", "--model", m, "--device", dev)
                         and s.python("peers", "add-teacache", "add/add_teacache.py", "--model", m, "--device", dev,
                                      "--coefficients", "0,0,0,1,0")):
        return False
    p = ("--model", m, "--cfg", 7.5, "--prompts", PROMPTS, "--plans",
         "none,50ls,deepcache:3,tgate:20,teacache:0.1,fbcache:0.1,adaptive:0.01")
    if s.args.smoke:  # seven plans: batch 1 checks the plumbing
        return s.bench("peers", "peers_b1", *p, "--n", 1)
    return s.bench("peers", "peers_b1", *p, "--n", 1) & s.bench("peers", "peers_b8", *p, "--n", 8)


def section_tome(s: Session) -> bool:
    m = make(s, "sd15-tome", "gpu/make_sd15_random.py", "--tome", 0.5)
    if m is None:
        return False
    return s.bench("tome", "tome_b1", "--model", m, "--cfg", 7.5, "--prompts", PROMPTS, "--inject", "0.003@0.5",
                   "--plans", "none,50ls", "--n", 1)


RUNNERS = dict(env=section_env, default=section_default, sd15=section_sd15, sdxl=section_sdxl,
               controlnet=section_controlnet, dit=section_dit, t2v=section_t2v, aoti=section_aoti,
               peers=section_peers, tome=section_tome, determinism=section_determinism)


def environment(device: str) -> dict:
    """This python's torch lib folder and NVIDIA libraries on LD_LIBRARY_PATH; fd_export importable."""
    import torch

    torch_dir = os.path.dirname(torch.__file__)
    nv = sorted(glob.glob(os.path.join(torch_dir, "..", "nvidia", "*", "lib")))
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([os.path.join(torch_dir, "lib"), *nv, env.get("LD_LIBRARY_PATH", "")])
    env["PYTHONPATH"] = ":".join(p for p in [EXPERIMENTS, env.get("PYTHONPATH", "")] if p)
    return env


def info(path: str, device: str) -> None:
    import torch

    lines = [dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), f"host {platform.node()}",
             f"python {platform.python_version()} torch {torch.__version__} cuda {torch.version.cuda}"]
    try:
        import diffusers

        lines.append(f"diffusers {diffusers.__version__}")
    except ImportError:
        lines.append("diffusers: not installed")
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True)
        lines.append(f"gpu {q.stdout.strip() or q.stderr.strip()}")
    else:
        lines.append("gpu: no nvidia-smi on this machine")
    lines.append(f"cpus {os.cpu_count()}, requested device {device}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def check_sample(folder: str, expect: int) -> None:
    """`fd sample` wrote `expect` PNGs and a run.json with its timings (the sd15 section's end-to-end check)."""
    from gpu_check import pngs as sample_pngs
    from PIL import Image

    pngs = [os.path.join(folder, name) for name in sample_pngs(folder)]
    run = json.load(open(os.path.join(folder, "run.json")))
    sizes = sorted({Image.open(p).size for p in pngs})
    print(json.dumps(dict(folder=folder, pngs=len(pngs), sizes=sizes, n=run.get("n"),
                          s_per_image=run.get("s_per_image"), timings_s=run.get("timings_s"))))
    if len(pngs) != expect:
        raise SystemExit(f"{folder}: {len(pngs)} PNGs, expected {expect}")


def edges_png(path: str, size: int) -> None:
    """A grid of edges standing in for a Canny map (the ControlNet condition)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size]
    edges = np.where((x % 32 == 0) | (y % 32 == 0), 255, 0).astype(np.uint8)
    Image.fromarray(np.stack([edges] * 3, -1)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fd", default="target/release/fd", help="the fd binary (built against this python's libtorch)")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N (cpu with --smoke)")
    ap.add_argument("--budget", type=float, default=570, help="seconds for the whole session (default 570)")
    ap.add_argument("--out", help="report folder (default out/gpu/DATE-HOST)")
    ap.add_argument("--work", default="out/gpu-work", help="models and samples (large; default out/gpu-work)")
    ap.add_argument("--only", help="comma-separated sections (default: all, in order)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per plan in every `fd bench` (default 3)")
    ap.add_argument("--tokenizer", default="out/sd15-tokenizer", help="CLIPTokenizer folder (built when missing)")
    ap.add_argument("--fresh", action="store_true", help="export the models again even when the work folder has them")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny widths, few samples (CI's check of this script)")
    ap.add_argument("--prepare", action="store_true",
                    help="only build the --tokenizer folders (to bring them to a machine without open_clip)")
    ap.add_argument("--check-sample", help=argparse.SUPPRESS)
    ap.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--edges", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=512, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.prepare:
        return tokenizers(a.tokenizer)
    if a.check_sample:
        return check_sample(a.check_sample, a.expect)
    if a.edges:
        return edges_png(a.edges, a.size)
    if a.smoke and a.device != "cpu":
        ap.error(f"--smoke runs on the CPU; got --device {a.device}")
    only = SECTIONS if not a.only else [x.strip() for x in a.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in SECTIONS]
    if unknown:
        ap.error(f"--only: unknown section(s) {', '.join(unknown)}; expected some of {', '.join(SECTIONS)}")
    if not os.access(a.fd, os.X_OK):
        ap.error(f"--fd {a.fd}: not an executable file (build it: `just build`, or scripts/build_for_libtorch.sh)")
    if a.budget <= 0:
        ap.error(f"--budget {a.budget}: expected a positive number of seconds")
    if not a.out:
        a.out = os.path.join("out", "gpu", f"{dt.date.today()}-{platform.node() or 'host'}" + ("-smoke" if a.smoke else ""))
    for d in (a.out, os.path.join(a.out, "logs"), os.path.join(a.out, "bench"), a.work):
        os.makedirs(d, exist_ok=True)
    for stale in glob.glob(os.path.join(a.out, "bench", "*")) + [os.path.join(a.out, "compare.jsonl")]:
        if os.path.exists(stale):
            os.remove(stale)  # a report describes one session
    s = Session(a, environment(a.device))
    info(os.path.join(a.out, "info.txt"), a.device)
    s.sections = {name: dict(status="not reached") for name in SECTIONS if name in only}
    for name in SECTIONS:
        if name not in only:
            continue
        s.current = name
        need = 0 if a.smoke else NEEDS[name]
        if a.smoke and name == "aoti":
            s.sections[name] = dict(status="skipped: smoke (AOTInductor compiles for minutes per graph on a CPU)")
        elif s.left() < need:
            s.sections[name] = dict(status=f"skipped: budget ({s.left():.0f} s left, needs about {need} s)")
        else:
            t = time.monotonic()
            s.sections[name] = dict(status="running")
            s.write()
            ok = RUNNERS[name](s)
            s.sections[name] = dict(status="ok" if ok else "failed (see its steps)", seconds=round(time.monotonic() - t, 1))
            if name == "env" and not ok:
                s.sections[name]["status"] = "failed: the fd binary cannot use this device; nothing else can run"
                s.write()
                raise SystemExit(f"`fd info` failed on --device {a.device}; report: {a.out}/summary.md")
        s.write()
    failed = [n for n, sec in s.sections.items() if sec["status"].startswith("failed")]
    print(f"report: {a.out}/summary.md ({len(failed)} section(s) failed{': ' + ', '.join(failed) if failed else ''})")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    cli.run(main)
