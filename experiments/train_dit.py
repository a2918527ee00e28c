"""Train the second default model (issue 19): a small class-conditional DiT (diffusers
DiTTransformer2DModel, adaLN-zero, patch 2 on 28x28: 196 tokens) on Fashion-MNIST, with the same
data, noise schedule and label dropout as the UNet default (experiments/train_fmnist.py), so the
two models share the judge, the metrics and the sampler settings.

Fixed variance (out_channels = in_channels, epsilon MSE): the DiT paper's learned sigma needs the
hybrid VLB loss, which this small CPU-trained model does without; the export of user DiT
checkpoints handles learned sigma separately. Label dropout is done here with a seeded generator
(class id 10 = null): the model's own LabelEmbedding dropout draws from the global RNG, which a
resumed run could not replay, so it is switched off.

Seeded and resumable exactly like train_fmnist.py: checkpoint (weights, EMA, optimizer, generator,
step) every --ckpt-every steps, loss.csv, same --run-dir continues.

  python experiments/train_dit.py --run-dir ~/.cache/fd/train/fmnist-dit --steps 12000
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from fd_export import fmnist as fmnist_data
from fd_export.fmnist import SCHEDULER_CONFIG

# sized for a CPU budget of a few hours on 2 cores (about 1 s per step of 64)
FMNIST_DIT_CONFIG = dict(
    sample_size=28, patch_size=2, in_channels=1, out_channels=1, num_layers=6, num_attention_heads=3,
    attention_head_dim=32, num_embeds_ada_norm=10, norm_type="ada_norm_zero", norm_elementwise_affine=False,
)
NUM_CLASSES = 10  # class id 10 is the null (unconditional) class


def build_model():
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(**FMNIST_DIT_CONFIG)
    for m in model.modules():  # our own seeded label dropout instead (see the docstring)
        if type(m).__name__ == "LabelEmbedding":
            m.dropout_prob = 0.0
    return model


def main() -> None:
    from train_fmnist import atomic_save, build_scheduler, learning_rate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--steps", type=int, default=12000, help="total optimizer steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--decay-frac", type=float, default=0.3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--label-dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

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
    model = build_model()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = build_scheduler()
    gen = torch.Generator().manual_seed(args.seed + 1)
    step, wall = 0, 0.0
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        step, wall = ck["step"], ck["wall_s"]
        print(f"resumed from {ckpt_path} at step {step} ({wall / 60:.1f} min trained)", flush=True)
    rows = []
    if os.path.exists(loss_path):
        with open(loss_path) as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with open(loss_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "wall_s"])
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(args.run_dir, "train_config.json"), "w") as f:
        json.dump(dict(args=vars(args), dit=FMNIST_DIT_CONFIG, null_class=NUM_CLASSES, scheduler=SCHEDULER_CONFIG,
                       params=sum(p.numel() for p in model.parameters()), torch=torch.__version__), f, indent=2)

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
        y[drop] = NUM_CLASSES
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        lr = learning_rate(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        pred = model(xt, timestep=t, class_labels=y).sample
        loss = F.mse_loss(pred, noise)
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
        raise SystemExit("training diverged (non-finite loss)")
    print(f"done: {step} steps, {wall / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
