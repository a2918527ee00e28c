"""experiments/train/model_card.py writes a default model's card from its manifest, training log, judge
report and measured sample folder — for the UNet default and the DiT default (the real files come
from `just model-card`; here small stand-ins with the same fields)."""

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SCHED = {"num_train_timesteps": 1000, "beta_schedule": "linear"}


def _write(p: Path, obj) -> None:
    p.write_text(json.dumps(obj))


def _card(tmp: Path, manifest: dict, train: dict) -> str:
    model, run, samples = tmp / "model", tmp / "run", tmp / "samples"
    for d in (model, run, samples):
        d.mkdir()
    _write(model / "manifest.json", dict(manifest, scheduler=SCHED, training=dict(checkpoint_step=8000, wall_s=7200.0)))
    _write(model / "classifier.json", {"test_accuracy": 0.9212})
    (run / "loss.csv").write_text("step,loss,lr,wall_s\n" + "".join(f"{i},{0.1 / i},3e-4,{i}\n" for i in range(1, 80)))
    _write(run / "train_config.json", dict(train, args=dict(seed=0, batch=64, lr=3e-4, decay_frac=0.3, ema=0.999)))
    Image.new("L", (28, 28)).save(samples / "grid.png")
    _write(samples / "run.json", dict(machine=dict(cpu="test cpu", cores=2), sampler=dict(steps=50), guidance=3.0, seed=0,
                                      command=["fd", "sample", "--model", "m"]))
    _write(samples / "consistency.json", dict(consistency=0.9, n=20, per_class=[dict(consistency=0.9)] * 10))
    subprocess.run([sys.executable, str(ROOT / "experiments" / "train" / "model_card.py"), "--model", str(model), "--run-dir",
                    str(run), "--samples", str(samples)], check=True, capture_output=True)
    assert (model / "loss.png").is_file() and (model / "samples_ddim50_cfg.png").is_file()
    return (model / "README.md").read_text()


def test_unet_card(tmp_path):
    card = _card(tmp_path, dict(params={"unet": 1_690_000, "cond_encoder": 2560}, cond=dict(seq_len=4, dim=64)),
                 dict(unet={"sample_size": 28}))
    assert card.startswith("# Default model: class-conditional UNet")
    assert "1.69M parameters" in card and "`just train-default`" in card
    assert "**0.900** over N=20" in card and "step 8000" in card


def test_dit_card(tmp_path):
    card = _card(tmp_path, dict(kind="dit", split=dict(encoder_blocks=4, blocks=6), params={"transformer": 1}),
                 dict(dit={"num_layers": 6}, null_class=10, params=1_233_700))
    assert card.startswith("# Second default model: class-conditional DiT")
    assert "1.23M parameters" in card and "the first 4 of 6 blocks" in card and "`just train-dit`" in card
    assert "**0.900** over N=20" in card and "MODEL=" in card
