"""Train the judge: a small CNN classifier on Fashion-MNIST train, exported to TorchScript.

fd-eval uses it for *class consistency* (share of generated samples classified as the requested
class; the stand-in for CLIP score on class prompts) and as a domain feature extractor
(`features` method: penultimate 128-d layer). Input: [N,1,28,28] in [-1,1]. Seeded.

  python experiments/train/train_classifier.py --out models/fmnist/classifier.pt
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fd_export import cli
from fd_export import fmnist as fmnist_data


class Judge(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.body(x))

    @torch.jit.export
    def features(self, x):
        return self.body(x)


def to_tensor(images):
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xtr, ytr = fmnist_data.load("train")
    xte, yte = fmnist_data.load("test")
    xtr, xte, ytr, yte = to_tensor(xtr), to_tensor(xte), torch.from_numpy(ytr), torch.from_numpy(yte)
    model = Judge()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * (len(xtr) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(len(xtr) // 128):
            idx = perm[i * 128:(i + 1) * 128]
            x = xtr[idx]
            # light augmentation: random 2-px shifts
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(xte[i:i + 1000]).argmax(1) for i in range(0, len(xte), 1000)])
        acc = (pred == yte).float().mean().item()
        print(f"epoch {ep + 1}: test accuracy {acc:.4f} ({time.time() - t0:.0f} s)", flush=True)
    scripted = torch.jit.script(model.eval())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    scripted.save(args.out)
    per_class = [((pred == yte) & (yte == c)).sum().item() / (yte == c).sum().item() for c in range(10)]
    info = dict(test_accuracy=acc, per_class_accuracy=per_class, epochs=args.epochs, seed=args.seed,
                train_seconds=round(time.time() - t0, 1), torch=torch.__version__,
                input="[N,1,28,28] float32 in [-1,1]", outputs="logits [N,10]; features(x) -> [N,128]")
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps(info))


if __name__ == "__main__":
    cli.run(main)
