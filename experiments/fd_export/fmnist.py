"""The default model's family: Fashion-MNIST data (Debian package `dataset-fashion-mnist`), the
class-conditional UNet2DConditionModel config and conditioning encoder, the training noise schedule,
and the export of a training checkpoint into a model folder.

`ClassCondEncoder` is the default model's conditioning encoder: class id -> a learned [L, D] token
sequence fed to the UNet's cross-attention, exactly where Stable Diffusion feeds CLIP text
embeddings. Id `num_classes` is the learned *null* embedding used for classifier-free guidance.
The IDX reader's Rust twin lives in `crates/fd-eval/src/idx.rs`; both check magic numbers and sizes
and fail with a message naming the file.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import struct

import numpy as np
import torch
from torch import nn

from .export import export_model
from .reference import write_pipeline_reference

FMNIST_DIR = os.environ.get("FD_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
CLASS_NAMES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]


def _open(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: Fashion-MNIST file missing (install Debian package dataset-fashion-mnist, "
            f"or set FD_FMNIST_DIR)")
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its declared shape."""
    with _open(path) as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    n = int(np.prod(dims))
    if len(data) - header != n:
        raise ValueError(f"{path}: expected {n} data bytes for shape {dims}, found {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N,28,28], labels int64 [N]) for split 'train' (60k) or 't10k' (10k)."""
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}[split]
    images = read_idx(os.path.join(FMNIST_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(FMNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{FMNIST_DIR}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


# The default model: same block family as Stable Diffusion 1.x (CrossAttn down/up blocks, ResNet
# blocks, cross-attention mid block), sized for a 2-core CPU training budget.
FMNIST_UNET_CONFIG = dict(
    sample_size=28,
    in_channels=1,
    out_channels=1,
    # Attention at 14x14 and 7x7 only: at 28x28 self-attention over 784 tokens costs 4x the
    # whole step on CPU (measured: 5.0 vs 1.27 s per batch-64 training step).
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    cross_attention_dim=64,
    attention_head_dim=8,
    norm_num_groups=32,
)
FMNIST_COND = dict(num_classes=10, seq_len=4, dim=64)


class ClassCondEncoder(nn.Module):
    """Class ids [B] (int64, `num_classes` = null) -> embeddings [B, seq_len, dim]."""

    def __init__(self, num_classes: int, seq_len: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.seq_len = seq_len
        self.dim = dim
        self.table = nn.Embedding(num_classes + 1, seq_len * dim)
        nn.init.normal_(self.table.weight, std=0.5)

    @property
    def null_id(self) -> int:
        return self.num_classes

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids).view(ids.shape[0], self.seq_len, self.dim)


# Training noise schedule (DDPM linear betas); recorded in the manifest as the sampler config.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
    prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    timestep_spacing="leading",
)


REFERENCE_FILE = "reference_ddim50_cfg3.safetensors"
# The Fashion-MNIST judge (experiments/train/train_classifier.py), shipped with the UNet default model.
JUDGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "models", "fmnist")

# The second default model (issue 19): a small class-conditional DiT (diffusers DiTTransformer2DModel,
# adaLN-zero) on the same data, schedule and label dropout, sized for a few CPU hours on 2 cores:
# patch 2 on 28x28 = 196 tokens, 6 blocks, width 96 (3 heads x 32), fixed variance (epsilon MSE).
FMNIST_DIT_CONFIG = dict(
    sample_size=28, patch_size=2, in_channels=1, out_channels=1, num_layers=6, num_attention_heads=3,
    attention_head_dim=32, num_embeds_ada_norm=10, norm_type="ada_norm_zero", norm_elementwise_affine=False,
)


def build_fmnist_dit():
    """The default DiT, with diffusers' own label dropout switched off (training draws its own)."""
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(**FMNIST_DIT_CONFIG)
    for m in model.modules():
        if type(m).__name__ == "LabelEmbedding":
            m.dropout_prob = 0.0
    return model


def export_fmnist_dit_checkpoint(checkpoint: str, out_dir: str, use_ema: bool = True, with_full: bool = False,
                                 with_stepcache: bool = True, aoti: bool = False) -> dict:
    """Export the default DiT from a train_dit.py checkpoint (EMA weights by default) with the
    authors' 18/28 split (4 of 6 blocks in the encoder)."""
    from .dit import export_dit

    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = build_fmnist_dit()
    model.load_state_dict(ck["ema" if use_ema else "model"])
    model.eval()
    os.makedirs(out_dir, exist_ok=True)
    sched_cfg = dict(SCHEDULER_CONFIG, _class_name="DDIMScheduler")
    n = FMNIST_DIT_CONFIG["num_embeds_ada_norm"]
    write_pipeline_reference(lambda x, t, ids: model(x, timestep=t.expand(x.shape[0]), class_labels=ids).sample,
                             1, 28, n, sched_cfg, os.path.join(out_dir, REFERENCE_FILE))
    manifest = export_dit(out_dir, "fmnist-cfg-dit", model, sched_cfg, class_names=CLASS_NAMES, with_full=with_full,
                          with_stepcache=with_stepcache, aoti=aoti,
                          family="fmnist-dit",
                          extra_manifest=dict(training=dict(checkpoint_step=int(ck["step"]), wall_s=float(ck["wall_s"]),
                                                            ema=use_ema)))
    copy_judge(out_dir)
    return manifest


ANALYSIS_FILE = "analysis.pt"


def _verified_fmnist_dit(checkpoint: str, model_dir: str, use_ema: bool = True):
    """The default DiT rebuilt from the train_dit.py checkpoint a frozen export came from, after its
    weights reproduced the export's own encoder graph on fixed inputs (max |diff| <= 1e-5):
    (manifest, model, DiTParts, example sample / emb / cond of 2 rows)."""
    from .dit import DiTEncoder, DiTParts, DiTTimeEmbed

    with open(os.path.join(model_dir, "manifest.json")) as f:
        m = json.load(f)
    if m.get("kind") != "dit" or not m.get("split"):
        raise ValueError(f"{model_dir}: not a DiT export (manifest kind {m.get('kind')!r})")
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    step = (m.get("training") or {}).get("checkpoint_step")
    if step is not None and int(ck["step"]) != int(step):
        raise ValueError(f"{checkpoint}: step {ck['step']}, but {model_dir} was exported from step {step}")
    model = build_fmnist_dit()
    model.load_state_dict(ck["ema" if use_ema else "model"])
    model.eval()
    split = int(m["split"]["encoder_blocks"])
    parts = DiTParts(model, split)
    g = torch.Generator().manual_seed(0)
    size = int(m["sample_size"][0])
    sample = torch.randn(2, int(m["in_channels"]), size, size, generator=g)
    cond = torch.tensor([[[1.0]], [[7.0]]])
    enc_graph = m["graphs"]["encoder"]
    ts = torch.jit.load(os.path.join(model_dir, enc_graph["file"]), map_location="cpu")
    with torch.no_grad():
        emb = DiTTimeEmbed(model)(torch.tensor([500.0, 120.0]))
        (ours,) = DiTEncoder(parts)(sample, emb, cond)
        (theirs,) = getattr(ts, enc_graph["method"])(sample, emb, cond)
    diff = float((ours - theirs).abs().max())
    if diff > 1e-5:
        raise ValueError(f"{checkpoint}: its weights do not reproduce {model_dir}'s encoder graph (max |diff| {diff:.2e})")
    return m, model, parts, (sample, emb, cond)


def add_fmnist_dit_pab(checkpoint: str, model_dir: str, use_ema: bool = True) -> dict:
    """Add PAB's graphs (pab_capture / pab_reuse, fd_export.methods.pab) to an existing default-DiT
    export, in their own file (pab.pt), leaving its other graph files untouched; the weights come
    from the train_dit.py checkpoint it was exported from, checked as _verified_fmnist_dit does."""
    from .dit import DiTStepCache
    from .flops import count_flops
    from .folder import sha256, write_manifest
    from .methods.pab import PAB_FILE, dit_pab_graphs
    from .tracing import trace_methods

    m, model, parts, (sample, emb, cond) = _verified_fmnist_dit(checkpoint, model_dir, use_ema)
    with torch.no_grad():
        h0, _ = DiTStepCache(parts, "stepcache_embed")(sample[:1], emb[:1], cond[:1])
    pab = dit_pab_graphs(model, int(m["split"]["encoder_blocks"]), h0, emb[:1], cond[:1])
    path = os.path.join(model_dir, PAB_FILE)
    trace_methods(pab, path)
    h = sha256(path)
    for key, (module, inp) in pab.items():
        m["graphs"][key] = dict(file=PAB_FILE, method=key, sha256=h, flops=count_flops(module, inp))
    write_manifest(model_dir, m)
    return m


def add_fmnist_dit_analysis(checkpoint: str, model_dir: str, use_ema: bool = True) -> dict:
    """Add the `encoder_analysis` graph (every encoder block's output, for `fd drift`: the paper's
    Fig. 11) to an existing default-DiT export, in its own file (analysis.pt), leaving its other
    graph files untouched. The export is frozen (no weights inside), so the weights come from the
    train_dit.py checkpoint it was exported from (checked by _verified_fmnist_dit)."""
    from .dit import DiTEncoder
    from .flops import count_flops
    from .folder import sha256, write_manifest
    from .tracing import trace_methods

    m, model, parts, (sample, emb, cond) = _verified_fmnist_dit(checkpoint, model_dir, use_ema)
    enc = DiTEncoder(parts, analysis=True)
    path = os.path.join(model_dir, ANALYSIS_FILE)
    trace_methods({"encoder_analysis": (enc, [sample[:1], emb[:1], cond[:1]])}, path)
    m["graphs"]["encoder_analysis"] = dict(file=ANALYSIS_FILE, method="encoder_analysis", sha256=sha256(path),
                                           flops=count_flops(enc, [sample[:1], emb[:1], cond[:1]]))
    write_manifest(model_dir, m)
    return m


def copy_judge(out_dir: str, judge_dir: str = JUDGE_DIR) -> None:
    """Put the UNet default's judge (classifier.pt + its report) beside a model trained on the same
    data, so every fd command that defaults to `<model>/classifier.pt` measures class consistency with
    the same classifier (git stores the identical file once)."""
    for f in ("classifier.pt", "classifier.json"):
        src = os.path.join(judge_dir, f)
        if not os.path.isfile(src):
            raise FileNotFoundError(f"{src}: the Fashion-MNIST judge is missing (experiments/train/train_classifier.py writes it)")
        if os.path.abspath(src) != os.path.abspath(os.path.join(out_dir, f)):
            shutil.copyfile(src, os.path.join(out_dir, f))


class Bundle(torch.nn.Module):
    """UNet + conditioning encoder, trained together."""

    def __init__(self):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.unet = UNet2DConditionModel(**FMNIST_UNET_CONFIG)
        self.cond = ClassCondEncoder(**FMNIST_COND)


def export_fmnist_checkpoint(checkpoint: str, out_dir: str, use_ema: bool = True, with_full: bool = False,
                             aoti: bool = False) -> dict:
    """Export the default model from a train_fmnist.py checkpoint (EMA weights by default); `aoti`:
    also AOTInductor packages of every graph (export_model's `aoti`)."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    os.makedirs(out_dir, exist_ok=True)
    bundle = Bundle()
    bundle.load_state_dict(ck["ema" if use_ema else "model"])
    cond_spec = dict(kind="class", seq_len=FMNIST_COND["seq_len"], dim=FMNIST_COND["dim"],
                     num_classes=FMNIST_COND["num_classes"], null_id=bundle.cond.null_id,
                     class_names=CLASS_NAMES)
    sched_cfg = dict(SCHEDULER_CONFIG, _class_name="DDIMScheduler")
    unet, cond = bundle.unet.eval(), bundle.cond.eval()
    write_pipeline_reference(lambda x, t, ids: unet(x, t, encoder_hidden_states=cond(ids)).sample,
                             unet.config.in_channels, unet.config.sample_size, cond.null_id, sched_cfg,
                             os.path.join(out_dir, REFERENCE_FILE))
    return export_model(
        out_dir, "fmnist-cfg-unet", bundle.unet, sched_cfg,
        bundle.cond, cond_spec, cond_example=torch.tensor([0]),
        extra_manifest=dict(training=dict(checkpoint_step=int(ck["step"]), wall_s=float(ck["wall_s"]),
                                          ema=use_ema)),
        with_full=with_full, deepcache_ids=(0, 1, 4), save_weights=True, aoti=aoti,
    )
