"""Train the embedded default model: a class-conditional UNet2DConditionModel on Fashion-MNIST.

Seeded and resumable: a checkpoint (weights, EMA weights, optimizer, RNG, step) is written atomically
every --ckpt-every steps and the run continues from it when restarted with the same --run-dir. Loss
is appended to <run-dir>/loss.csv. Export the EMA weights with `export_unet.py --checkpoint`. The
loop itself is fd_export.training.train (shared with train_dit.py).

  python experiments/train/train_fmnist.py --run-dir ~/.cache/fd/train/fmnist --steps 8000
"""
from __future__ import annotations

from fd_export import cli
from fd_export.fmnist import FMNIST_COND, FMNIST_UNET_CONFIG, Bundle
from fd_export.training import arguments, train


def main() -> None:
    args = arguments(__doc__, steps=5000, lr=5e-4, warmup=250).parse_args()
    train(args, Bundle, lambda m, xt, t, y: m.unet(xt, t, encoder_hidden_states=m.cond(y)).sample,
          lambda m: m.cond.null_id, dict(unet=FMNIST_UNET_CONFIG, cond=FMNIST_COND))


if __name__ == "__main__":
    cli.run(main)
