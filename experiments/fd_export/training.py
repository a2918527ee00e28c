"""The seeded, resumable training loop both default models use (experiments/train/train_fmnist.py: the
UNet; experiments/train/train_dit.py: the DiT): Fashion-MNIST train split in [-1, 1], a fixed permutation
per epoch from the seed, seeded label dropout to the null class, epsilon MSE at uniform timesteps of
the default DDPM schedule, AdamW with warm-up + cosine decay, gradient clipping, EMA. A checkpoint
(weights, EMA, optimizer, generator, step) is written atomically every --ckpt-every steps and the
same --run-dir continues from it; loss.csv is cut back to the checkpoint on resume."""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import fmnist as fmnist_data
from .errors import ExportError
from .fmnist import SCHEDULER_CONFIG


def build_scheduler():
    from diffusers import DDPMScheduler

    cfg = {k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one",)}
    return DDPMScheduler(**cfg)


def learning_rate(step: int, args) -> float:
    """Linear warm-up, constant, then a cosine decay to 0 over the last `decay_frac` of the steps.

    A function of (step, args) only, so a resumed run follows the same schedule as an uninterrupted
    one with the same --steps."""
    lr = args.lr * min(1.0, (step + 1) / args.warmup)
    start = args.steps * (1.0 - args.decay_frac)
    if args.decay_frac > 0 and step >= start:
        lr *= 0.5 * (1.0 + math.cos(math.pi * (step - start) / (args.steps - start)))
    return lr


def atomic_save(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def arguments(doc: str, steps: int, lr: float, warmup: int) -> argparse.ArgumentParser:
    """The training flags (defaults per model)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--steps", type=int, default=steps, help="total optimizer steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--decay-frac", type=float, default=0.3,
                    help="cosine-decay the learning rate to 0 over this final fraction of --steps (0: constant)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--label-dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    return ap


def train(args, build: Callable[[], torch.nn.Module], predict: Callable, null_id: Callable[[torch.nn.Module], int],
          config: dict) -> None:
    """Train `build()` (called after seeding) with `predict(model, xt, t, y) -> eps`; `null_id(model)`
    is the class id label dropout uses; `config` goes into train_config.json beside the args."""
    torch.set_num_threads(args.threads)
    os.makedirs(args.run_dir, exist_ok=True)
    ckpt_path = os.path.join(args.run_dir, "checkpoint.pt")
    loss_path = os.path.join(args.run_dir, "loss.csv")

    images, labels = fmnist_data.load("train")
    x_all = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
    y_all = torch.from_numpy(labels)
    n = x_all.shape[0]
    steps_per_epoch = n // args.batch

    torch.manual_seed(args.seed)
    model = build()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = build_scheduler()
    gen = torch.Generator().manual_seed(args.seed + 1)
    step = 0
    wall = 0.0
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        step, wall = ck["step"], ck["wall_s"]
        print(f"resumed from {ckpt_path} at step {step} ({wall / 60:.1f} min trained)", flush=True)
    # Keep the loss log consistent with the checkpoint (drop rows written after it).
    rows = []
    if os.path.exists(loss_path):
        with open(loss_path) as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with open(loss_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "wall_s"])
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(args.run_dir, "train_config.json"), "w") as f:
        json.dump(dict(args=vars(args), **config, scheduler=SCHEDULER_CONFIG, torch=torch.__version__), f, indent=2)

    null = null_id(model)
    alphas = sched.alphas_cumprod
    model.train()
    t_last = time.time()
    log_f = open(loss_path, "a", newline="")
    log = csv.writer(log_f)
    loss = torch.tensor(0.0)
    while step < args.steps:
        epoch, pos = divmod(step, steps_per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 100003 + epoch))
        idx = perm[pos * args.batch:(pos + 1) * args.batch]
        x0, y = x_all[idx], y_all[idx].clone()
        drop = torch.rand(y.shape[0], generator=gen) < args.label_dropout
        y[drop] = null
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        lr = learning_rate(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.mse_loss(predict(model, xt, t, y), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        now = time.time()
        wall += now - t_last
        t_last = now
        log.writerow([step, f"{loss.item():.6f}", f"{lr:.3e}", f"{wall:.1f}"])
        if step % 50 == 0:
            log_f.flush()
            print(f"step {step}/{args.steps} loss {loss.item():.4f} {wall / step:.3f} s/step "
                  f"eta {(args.steps - step) * wall / step / 60:.1f} min", flush=True)
        if step % args.ckpt_every == 0 or step == args.steps:
            log_f.flush()
            atomic_save(dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                             gen=gen.get_state(), step=step, wall_s=wall), ckpt_path)
    log_f.close()
    if not math.isfinite(loss.item()):
        raise ExportError("training diverged (non-finite loss)")
    print(f"done: {step} steps, {wall / 60:.1f} min", flush=True)
