"""Tiny random-init checkpoints of every UNet family fd exports beyond SD 1.x, built from the real
diffusers / transformers classes (shapes after diffusers' own test suite), exported through the
same code path a user's folder takes, with Python references the Rust tests must reproduce.

  python experiments/tests/make_families.py target/fixtures/families

Families (OUT/<family>/):
  sd2   SD 2.x form: linear transformer projections, upcast_attention, v-prediction DDIM
        (stabilityai/stable-diffusion-2's scheduler config).
  controlnet  SD 1.x form with a ControlNetModel (diffusers' test shapes): the baseline runs it every
        step; encoder propagation runs it at key steps only, its residuals (x conditioning scale)
        added to the encoder features before they are reused, as the authors' ControlNet pipeline
        does. Condition image control.png at the pixel size.
  if    DeepFloyd-IF stage I form (diffusers' IF test UNet: pixel space, SimpleCrossAttn blocks,
        addition_embed_type="text", encoder_hid_proj, learned-range variance output), a tiny T5
        encoder with a Unigram tokenizer trained here, DDPM learned_range + dynamic thresholding;
        the pipeline's initial and step noise replaced by fd's per-seed noise.
  tome  SD 1.x form with token merging (tomesd 0.1.3, fixed partition) at 16x16 latents (256 tokens
        at full resolution, half merged): the pipeline's UNet patched with tomesd is the reference.
  fmnist-tome  the committed default model re-exported with ToMe (experiments/export/export_tome.py,
        ratio 0.5, max downsample 4: merges at its 14x14 and 7x7 attention), against the tomesd-
        patched eager UNet in a DDIM + CFG loop (class conditioning from its cond_encoder graph).
  sdxl  SDXL form: two CLIP text encoders (penultimate states concatenated, pooled projection of the
        second), addition_embed_type="text_time" with 6 time ids, force_zeros_for_empty_prompt,
        Euler (SDXL's scheduler config), VAE with force_upcast.
  t2v   text-to-video form (UNet3DConditionModel as diffusers' TextToVideoSDPipeline test: temporal
        transformer_in, 3-D blocks) with 3 frames, CLIP text encoder, per-frame VAE; references =
        TextToVideoSDPipeline itself (output_type="latent") and with the paper's algorithm applied
        through hooks on its UNet3D (conv_in, transformer_in, down and mid blocks captured at key
        steps); injection wrapped around its scheduler step (which sees frames folded into the batch).
  dit   DiT form (DiTTransformer2DModel: patch 2, adaLN-zero, 1000 classes + null, learned sigma) in a
        DiTPipeline folder with a VAE, split at the authors' 18/28 ratio (3 of 4 blocks here). `none`
        is DiTPipeline itself (DDIM, guidance on every latent channel, learned sigma dropped, its
        initial noise replaced by fd's); key-step cases hook the pipeline's transformer: the last
        encoder block's output tokens are captured at a key step and substituted at the others,
        the decoder blocks run at their own timestep (FasterDiffusion-DiT's models.py).
  dit-authors  the same weights sampled the way FasterDiffusion-DiT samples (transcribed, not
        copied): DDPM with the learned-range variance, guidance on the first 3 of 4 channels (the
        original DiT code's choice; exported with guidance_channels=3), prior noise injection after
        the step while t < 0.3 * 1000; fd's step noise.

Each OUT/<family>/ holds checkpoint/ (diffusers folder), model/ (fd export), reference.safetensors
and cases.json:
  - model level: the pipeline's own encode_prompt (states, pooled, negative), the UNet forward with
    the pipeline's added_cond_kwargs;
  - sampling: `none` = the diffusers pipeline itself (output_type="latent") on per-seed noise;
    key-step cases = the same pipeline with the paper's algorithm applied through hooks (at a key
    step the UNet's encoder outputs — conv_in, down blocks, mid block — are captured; at other
    steps the forward runs at its own timestep with them substituted) and prior noise injection
    z <- z + c * z_T (z_T = the initial latents) while t < tau * 1000, wrapped around the pipeline's
    scheduler.step: before it (after the UNet, as the authors place it) or after it.
Regenerated when this script, make_sd_tiny.py or fd_export change.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys

import torch
from diffusers.utils import logging as diffusers_logging

diffusers_logging.set_verbosity_error()
HERE = os.path.dirname(os.path.abspath(__file__))

from fd_export.clip_vocab import build_clip_tokenizer  # noqa: E402
from fd_export.methods.adaptive import adaptive_reference  # noqa: E402
from fd_export.methods.deepcache import OfficialDeepCache  # noqa: E402
from fd_export.methods.step_cache import dit_step_cache_reference, step_cache_reference  # noqa: E402
from fd_export.methods.tgate import tgate_reference  # noqa: E402

PROMPTS = ["a photograph of an astronaut riding a horse", "A Cat, sitting on the MAT!!"]
SEEDS = [5, 6]
GUIDANCE = 5.0
STEPS = 10
CASES = {
    "none": dict(keys=list(range(STEPS)), inject=None),
    "keys_inject": dict(keys=[0, 1, 2, 4, 7], inject=dict(c=0.003, tau=0.5, when="before")),
    "uniform2_inject_after": dict(keys=list(range(0, STEPS, 2)), inject=dict(c=0.05, tau=0.6, when="after")),
    # the DeepCache peer as its authors' helper runs it (full step every 3 steps, cache_branch_id 0:
    # its default) on families whose export has its graphs; reference = fd_export.methods.deepcache.OfficialDeepCache
    "deepcache3": dict(keys=list(range(0, STEPS, 3)), inject=None, deepcache_id=0, families=["sd2", "sdxl", "tome", "fmnist-tome"]),
}
SD_SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                set_alpha_to_one=False, steps_offset=1)


def perturb(module, scale=0.02):
    """Random init leaves some layers at zero (conv_out, attention outputs): perturb every
    parameter so every path carries signal."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module


def text_config(**kw):
    from transformers import CLIPTextConfig

    base = dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                hidden_act="gelu")
    base.update(kw)
    return CLIPTextConfig(**base)


def tiny_vae(**kw):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                         norm_num_groups=8, sample_size=32, **kw)


def build_sd2(ckpt: str) -> None:
    from diffusers import DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(20)
    save_sd_folder(ckpt, perturb(UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True,
        norm_num_groups=8,
    )), DDIMScheduler(**SD_SCHED, prediction_type="v_prediction"))


def build_sdxl(ckpt: str) -> None:
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(21)
    # diffusers' SDXL test UNet, widened to norm groups of 8
    perturb(UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 24, cross_attention_dim=64, norm_num_groups=8,
    )).save_pretrained(os.path.join(ckpt, "unet"))
    perturb(CLIPTextModel(text_config(hidden_size=32))).save_pretrained(os.path.join(ckpt, "text_encoder"))
    perturb(CLIPTextModelWithProjection(text_config(hidden_size=32, projection_dim=24, pad_token_id=0))).save_pretrained(
        os.path.join(ckpt, "text_encoder_2"))
    perturb(tiny_vae(force_upcast=True, scaling_factor=0.13025)).save_pretrained(os.path.join(ckpt, "vae"))
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                           timestep_spacing="leading", interpolation_type="linear").save_pretrained(
        os.path.join(ckpt, "scheduler"))
    build_clip_tokenizer(os.path.join(ckpt, "tokenizer"))
    build_clip_tokenizer(os.path.join(ckpt, "tokenizer_2"), pad_token="!")
    with open(os.path.join(ckpt, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": True}, f)


T2V_FRAMES = 3


def build_t2v(ckpt: str) -> None:
    from diffusers import UNet3DConditionModel

    torch.manual_seed(26)
    # diffusers' TextToVideoSDPipeline test UNet, with norm groups of 8 and a text width of 32
    save_sd_folder(ckpt, perturb(UNet3DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )))


def save_sd_folder(ckpt: str, unet, scheduler=None) -> None:
    """A diffusers SD-layout folder around `unet` (already built and perturbed: the random draws
    then follow in the same order as before): tiny CLIP text encoder, VAE, scheduler (DDIM with
    SD's betas by default) and tokenizer."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextModel

    unet.save_pretrained(os.path.join(ckpt, "unet"))
    perturb(CLIPTextModel(text_config())).save_pretrained(os.path.join(ckpt, "text_encoder"))
    perturb(tiny_vae()).save_pretrained(os.path.join(ckpt, "vae"))
    (scheduler or DDIMScheduler(**SD_SCHED)).save_pretrained(os.path.join(ckpt, "scheduler"))
    build_clip_tokenizer(os.path.join(ckpt, "tokenizer"))


def video_strip(frames: torch.Tensor, f: int) -> torch.Tensor:
    """[B*F, C, H, W] decoded frames -> [B, C, H, F*W] film strips (fd's to_images for video)."""
    s = frames.shape
    return frames.reshape(-1, f, *s[1:]).permute(0, 2, 3, 1, 4).reshape(-1, s[1], s[2], f * s[3])


CONTROL_SCALE = 0.8


def step_noise(seed: int, i: int, shape) -> torch.Tensor:
    """fd's per-sample step noise (fd_sched::step_noise)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + 1 + i))


def build_t5_tokenizer(dst: str):
    """A small T5-style Unigram tokenizer (pad 0, </s> 1, <unk> 2, Metaspace, `$A </s>`), trained
    on a few sentences with the `tokenizers` library (no vocabulary can be downloaded here)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    corpus = PROMPTS + ["a lone sailboat drifting on calm waters", "a red cube on a blue sphere",
                        "an astronaut riding a horse on the moon", "the quick brown fox jumps over the lazy dog"] * 4
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"],
                                                            unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)
    fast.save_pretrained(dst)
    return fast


def build_if(ckpt: str) -> None:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(23)
    tok = build_t5_tokenizer(os.path.join(ckpt, "tokenizer"))
    # diffusers' IF pipeline test UNet
    perturb(UNet2DConditionModel(
        sample_size=16, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"), in_channels=3, out_channels=6,
        cross_attention_dim=32, encoder_hid_dim=32, attention_head_dim=8, addition_embed_type="text",
        addition_embed_type_num_heads=2, cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift",
        act_fn="gelu", norm_num_groups=8,
    )).save_pretrained(os.path.join(ckpt, "unet"))
    perturb(T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                    relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))).save_pretrained(
        os.path.join(ckpt, "text_encoder"))
    # DeepFloyd/IF-I-XL-v1.0's scheduler config
    DDPMScheduler(beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02, clip_sample=True,
                  clip_sample_range=1.0, thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.5,
                  variance_type="learned_range", prediction_type="epsilon").save_pretrained(
        os.path.join(ckpt, "scheduler"))


def build_controlnet(ckpt: str) -> None:
    from diffusers import ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from PIL import Image
    from transformers import CLIPTextModel

    torch.manual_seed(22)
    unet = perturb(UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    ))
    unet.save_pretrained(os.path.join(ckpt, "unet"))
    # zero-initialised residual convs (a fresh ControlNet adds nothing): perturbed so it does
    perturb(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16)), 0.05).save_pretrained(
        os.path.join(ckpt, "controlnet"))
    perturb(CLIPTextModel(text_config())).save_pretrained(os.path.join(ckpt, "text_encoder"))
    perturb(tiny_vae()).save_pretrained(os.path.join(ckpt, "vae"))
    DDIMScheduler(**SD_SCHED).save_pretrained(os.path.join(ckpt, "scheduler"))
    build_clip_tokenizer(os.path.join(ckpt, "tokenizer"))
    g = torch.Generator().manual_seed(7)
    px = (torch.rand(16, 16, 3, generator=g) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(px, "RGB").save(os.path.join(os.path.dirname(ckpt), "control.png"))


TOME = dict(ratio=0.5, max_downsample=1, sx=2, sy=2, merge_attn=True, merge_crossattn=False, merge_mlp=False)
TOME_FMNIST = dict(TOME, max_downsample=4)
FMNIST_CLASSES = [7, 8]
ADAPTIVE_THRESHOLDS = (0.01, 0.05)  # the official default, and one that skips more
# TeaCache / FBCache plans checked on the default model (10 steps): each skips a different set of
# steps for the two seeds or in both reuse forms
STEP_CACHE_PLANS = ("teacache:0.3", "teacache:0.2:residual", "fbcache:0.1", "fbcache:0.2:residual")
# partial propagation (`0,4,7+partial:ID`) on the default model: DeepCache ids whose shallow
# encoders the committed model has
PARTIAL_IDS = (1, 4)
# runtime key-step budgets (`runtime:K`) on the default model
RUNTIME_BUDGETS = (4, 6)
# T-GATE plans (G:SP:FI:W) on the default model: every graph kind runs in one or the other
TGATE_PLANS = ("tgate:5:2:1:1", "tgate:6:5:2:2")


def build_tome(ckpt: str) -> None:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(24)
    save_sd_folder(ckpt, perturb(UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )))


DIT_CLASSES = [207, 360]  # DiTPipeline's null class is hard-coded to 1000: the tiny DiT has 1000 classes
DIT_CASES = {
    "none": dict(keys=list(range(STEPS)), inject=None),
    "keys_inject": dict(keys=[0, 1, 2, 4, 7], inject=dict(c=0.003, tau=0.5, when="before")),
    "uniform2_inject_after": dict(keys=list(range(0, STEPS, 2)), inject=dict(c=0.05, tau=0.6, when="after")),
}
DIT_AUTHORS_CASES = {
    "none": dict(keys=list(range(STEPS)), inject=None),
    # FasterDiffusion-DiT: injection after the step while t / 1000 < 0.3 (strength raised from 0.003
    # so that 3 of 10 steps make a visible difference)
    "keys_inject_after": dict(keys=[0, 1, 2, 4, 7], inject=dict(c=0.05, tau=0.3, when="after")),
}


def build_dit(ckpt: str, authors: bool) -> None:
    from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel

    torch.manual_seed(25)
    perturb(DiTTransformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=4, num_attention_heads=2,
        attention_head_dim=8, num_embeds_ada_norm=1000, norm_type="ada_norm_zero", norm_elementwise_affine=False,
    )).save_pretrained(os.path.join(ckpt, "transformer"))
    perturb(tiny_vae(scaling_factor=0.18215)).save_pretrained(os.path.join(ckpt, "vae"))
    if authors:  # the IDDPM sampler of the DiT code: learned-range variance, 1000 linear betas
        DDPMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False,
                      variance_type="learned_range", timestep_spacing="linspace").save_pretrained(
            os.path.join(ckpt, "scheduler"))
    else:  # facebook/DiT-XL-2-256's scheduler config
        DDIMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False).save_pretrained(
            os.path.join(ckpt, "scheduler"))


def dit_references(family: str, ckpt: str, out: str, split: int) -> dict:
    """Model-level references (transformer forward, VAE decode) and every case's sampling."""
    import diffusers.pipelines.dit.pipeline_dit as dit_mod
    import diffusers.schedulers.scheduling_ddpm as ddpm_mod
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        DiTPipeline,
        DiTTransformer2DModel,
    )

    tr = DiTTransformer2DModel.from_pretrained(ckpt, subfolder="transformer").eval()
    vae = AutoencoderKL.from_pretrained(ckpt, subfolder="vae").eval()
    g = torch.Generator().manual_seed(3)
    latents, steps = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([999.0, 21.0])
    # every transformer block's output tokens [B, N, D] during that forward (the drift analysis's
    # per-block features: encoder_analysis / decoder_analysis)
    blocks = {}
    handles = [blk.register_forward_hook(lambda _m, _i, o, k=k: blocks.__setitem__(f"block{k}", o.clone()))
               for k, blk in enumerate(tr.transformer_blocks)]
    try:
        with torch.no_grad():
            eps = tr(latents, timestep=steps.long(), class_labels=torch.tensor([DIT_CLASSES[0], 1000])).sample
            images = vae.decode(latents / vae.config.scaling_factor).sample
    finally:
        for h in handles:
            h.remove()
    shape = (1, 4, 8, 8)
    noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in SEEDS])
    tensors = dict(latents=latents, t=steps, eps=eps, images=images, noise=noise, **blocks)
    authors = family == "dit-authors"
    cases = DIT_AUTHORS_CASES if authors else DIT_CASES
    timesteps = None
    for name, case in cases.items():
        # FasterDiffusion-DiT's encoder sharing: the last encoder block's output tokens held from
        # the key step (the decoder blocks and final layer run at the step's own timestep)
        hooks = (HoldAtKeySteps(tr, tr.transformer_blocks[split - 1], case["keys"])
                 if len(case["keys"]) < STEPS else None)
        inj = case["inject"]
        try:
            if authors:
                sched = DDPMScheduler.from_pretrained(ckpt, subfolder="scheduler")
                sched.set_timesteps(STEPS)
                x = noise.clone()
                z_t = x.clone()
                labels = torch.tensor(DIT_CLASSES + [1000] * len(SEEDS))
                orig = ddpm_mod.randn_tensor
                with torch.no_grad():
                    for i, t in enumerate(sched.timesteps):
                        out_ = tr(torch.cat([x, x]), timestep=t.expand(2 * len(SEEDS)), class_labels=labels).sample
                        c_out, u_out = out_.chunk(2)
                        # guidance on the first 3 channels; the rest (4th noise channel, variance)
                        # from the conditional branch, as DiT's forward_with_cfg + p_sample
                        guided = u_out[:, :3] + GUIDANCE * (c_out[:, :3] - u_out[:, :3])
                        pred = torch.cat([guided, c_out[:, 3:]], dim=1)
                        ddpm_mod.randn_tensor = lambda *a, i=i, **k: torch.cat(
                            [step_noise(s, i, shape) for s in SEEDS])
                        try:
                            x = sched.step(pred, t, x).prev_sample
                        finally:
                            ddpm_mod.randn_tensor = orig
                        if inj is not None and float(t) < inj["tau"] * 1000:
                            x = x + inj["c"] * z_t
                result = x
            else:
                pipe = DiTPipeline(transformer=tr, vae=vae, scheduler=DDIMScheduler.from_pretrained(
                    ckpt, subfolder="scheduler"))
                pipe.set_progress_bar_config(disable=True)
                z_t = noise.clone()
                orig_step, orig_randn, orig_decode = pipe.scheduler.step, dit_mod.randn_tensor, pipe.vae.decode
                captured = {}

                def step(model_output, timestep, sample, *a, **k):
                    # DiTPipeline steps both CFG halves; injection on the whole batch (same rows)
                    on = inj is not None and float(timestep) < inj["tau"] * 1000
                    zz = torch.cat([z_t, z_t])
                    if on and inj["when"] == "before":
                        sample = sample + inj["c"] * zz
                    o = orig_step(model_output, timestep, sample, *a, **k)
                    if on and inj["when"] == "after":
                        o.prev_sample = o.prev_sample + inj["c"] * zz
                    return o

                def decode(z, *a, **k):
                    captured["z"] = z.clone()
                    return orig_decode(z, *a, **k)

                pipe.scheduler.step = step
                dit_mod.randn_tensor = lambda *a, **k: noise.clone()
                pipe.vae.decode = decode
                try:
                    with torch.no_grad():
                        pipe(class_labels=DIT_CLASSES, guidance_scale=GUIDANCE, num_inference_steps=STEPS,
                             output_type="np")
                finally:
                    dit_mod.randn_tensor = orig_randn
                    pipe.scheduler.step, pipe.vae.decode = orig_step, orig_decode
                result = captured["z"] * vae.config.scaling_factor
                sched = pipe.scheduler
        finally:
            if hooks is not None:
                hooks.remove()
        tensors[f"sample.{name}"] = result.contiguous()
        timesteps = [float(t) for t in sched.timesteps]
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(dict(classes=DIT_CLASSES, seeds=SEEDS, guidance=GUIDANCE, steps=STEPS, cases=cases,
                       scheduler="ddpm" if authors else "ddim", timesteps=timesteps, split=split), f, indent=1)


STEP_CACHE_STEPS = 50


def dit_step_cache(ckpt: str, out: str, manifest: dict) -> dict:
    """TeaCache / FBCache on the tiny DiT (DDIM, CFG), one sample at a time against
    dit_step_cache_reference. Thresholds are set from the baseline trajectory's own indicator
    changes (so both plans skip some steps and compute others) and written into the plan strings.
    50 steps, the fit's own schedule: TeaCache's polynomial is fitted on DDIM-50 changes, and a
    10-step schedule's first change lies far outside the fitted range (the polynomial then
    returns large negative values that hold the accumulator down for the whole run)."""
    import numpy as np
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    tr = DiTTransformer2DModel.from_pretrained(ckpt, subfolder="transformer").eval()
    sched = DDIMScheduler.from_pretrained(ckpt, subfolder="scheduler")
    coef = manifest["teacache"]["coefficients"]
    noise = torch.cat([torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(s)) for s in SEEDS])
    # the indicators' step-to-step changes on sample 0's baseline (threshold inf: every step computes
    # under teacache only at i = 0, so use fbcache with threshold -1: always computes)
    seen = dict(tea=[], fb=[])
    blk0 = tr.transformer_blocks[0]
    h1 = blk0.norm1.register_forward_hook(lambda mod, a, o: seen["tea"].append(o[0].clone()))
    h2 = blk0.register_forward_hook(lambda mod, a, o: seen["fb"].append((o - a[0]).clone()))
    sched.set_timesteps(STEP_CACHE_STEPS)
    with torch.no_grad():
        dit_step_cache_reference(tr, sched, noise[:1].clone(), torch.tensor([1000, DIT_CLASSES[0]]), GUIDANCE,
                                 "fbcache", -1.0)
    h1.remove()
    h2.remove()
    rel = lambda a, b: float((a - b).abs().mean() / b.abs().mean())  # noqa: E731
    tea = [float(np.poly1d(coef)(rel(a, b))) for a, b in zip(seen["tea"][1:], seen["tea"][:-1])]
    fb = [rel(a, b) for a, b in zip(seen["fb"][1:], seen["fb"][:-1])]
    # FBCache: halfway between the two middle changes (a threshold equal to an observed change
    # would leave the decision to float rounding)
    mid = sorted(fb)[len(fb) // 2 - 1: len(fb) // 2 + 1]
    plans = [f"teacache:{2.5 * float(np.median(tea)):.4g}", f"fbcache:{sum(mid) / 2:.4g}"]
    tensors, flags = {}, {}
    for plan in plans:
        rule, thr = plan.split(":")
        outs, ran = [], []
        for r in range(len(SEEDS)):
            sched.set_timesteps(STEP_CACHE_STEPS)
            with torch.no_grad():
                x, f = dit_step_cache_reference(tr, sched, noise[r:r + 1].clone(),
                                                torch.tensor([1000, DIT_CLASSES[r]]), GUIDANCE, rule, float(thr),
                                                coef if rule == "teacache" else None)
            outs.append(x)
            ran.append(f)
        tensors[f"step_cache.{plan}"] = torch.cat(outs).contiguous()
        flags[plan] = ran
    # diffusers' own hooks, one sample and its CFG rows per call: FBCache at the plan above's
    # threshold (it must compute the steps the transcription computed), and the four methods fd
    # takes from diffusers (their transcribed schedules must give the hooks' computed steps)
    from fd_export.methods import magcache, pab, taylorseer
    from fd_export.methods.hooks import fastercache_reference, fbcache_reference

    def per_sample(run):
        """run(x, labels2) -> (latents, flags) for each seed alone: (stacked latents, flags per sample)."""
        outs, ran = [], []
        for i in range(len(SEEDS)):
            sched.set_timesteps(STEP_CACHE_STEPS)
            with torch.no_grad():
                x, f = run(noise[i:i + 1].clone(), torch.tensor([1000, DIT_CLASSES[i]]))
            outs.append(x)
            ran.append(f)
        return torch.cat(outs).contiguous(), ran

    fb_plan = plans[1]
    tensors[f"diffusers.{fb_plan}"], ran = per_sample(
        lambda x, lab: fbcache_reference(tr, sched, x, lab, GUIDANCE, float(fb_plan.split(":")[1])))
    if ran != flags[fb_plan]:
        raise AssertionError(f"{fb_plan}: diffusers' hook computed {ran}, the transcription {flags[fb_plan]}")
    ratios = manifest["magcache"]["mag_ratios"]
    num = lambda plan: [float(v) if "." in v else int(v) if v.isdigit() else v for v in plan.split(":")[1:]]  # noqa: E731
    sched.set_timesteps(STEP_CACHE_STEPS)
    runs = {  # plan -> (reference run, transcribed schedule or None)
        **{p: (lambda x, lab, a=num(p): magcache.diffusers_reference(tr, sched, x, lab, GUIDANCE, ratios, *a),
               magcache.schedule(ratios, STEP_CACHE_STEPS, *num(p))) for p in MAGCACHE_PLANS},
        **{p: (lambda x, lab, a=num(p): taylorseer.diffusers_reference(tr, sched, x, lab, GUIDANCE, *a),
               taylorseer.schedule(STEP_CACHE_STEPS, *num(p)[:2])) for p in TAYLORSEER_PLANS},
        **{p: (lambda x, lab, a=num(p): pab.diffusers_reference(tr, sched, x, lab, GUIDANCE, *a),
               pab.schedule(sched.timesteps, *num(p))) for p in PAB_PLANS},
        # flags = (the unconditional rows ran, the attention computed); the Rust test compares them
        **{p: (lambda x, lab, a=num(p): fastercache_reference(tr, sched, x, lab, GUIDANCE, *a), None)
           for p in FASTERCACHE_PLANS},
    }
    for plan, (run, want) in runs.items():
        tensors[f"{plan.split(':')[0]}.{plan}"], ran = per_sample(run)
        if ran[0] != ran[1] or (want is not None and ran[0] != want):
            raise AssertionError(f"{plan}: diffusers' hook computed {ran}, the transcription {want}")
        flags[plan] = ran
    from safetensors.torch import save_file

    save_file(tensors, os.path.join(out, "step_cache.safetensors"))
    return flags


# FasterCache: diffusers' defaults (U 5, A 2, weight 0.5) and a sparser one
FASTERCACHE_PLANS = ["fastercache:5:2:0.5", "fastercache:3:2:0.3"]
# PAB: every 2nd step inside diffusers' default range, every 3rd inside a wider one
PAB_PLANS = ["pab:2:100:800", "pab:3:50:950"]
# MagCache plans checked against diffusers' hook on the tiny DiT: its defaults, and a looser one
MAGCACHE_PLANS = ["magcache:0.06:3:0.2", "magcache:0.3:2:0.1"]
# TaylorSeer: diffusers' defaults (order 1, bf16 factors) and order 2 in float32
TAYLORSEER_PLANS = ["taylorseer:5:3:1:bf16", "taylorseer:3:4:2:f32"]


def build_dit_family(family: str, out: str) -> None:
    from fd_export.dit import export_dit_folder

    ckpt = os.path.join(out, "checkpoint")
    build_dit(ckpt, authors=family == "dit-authors")
    m = export_dit_folder(ckpt, os.path.join(out, "model"), "cpu", "float32", name=f"{family}-tiny",
                          guidance_channels=3 if family == "dit-authors" else None)
    dit_references(family, ckpt, out, m["split"]["encoder_blocks"])
    if family == "dit":
        flags = dit_step_cache(ckpt, out, m)
        with open(os.path.join(out, "cases.json")) as f:
            cases = json.load(f)
        diffusers_hooks = ("magcache", "taylorseer", "pab", "fastercache")  # checked against diffusers' own hooks
        cases["step_cache"] = {k: v for k, v in flags.items() if not k.startswith(diffusers_hooks)}
        cases["diffusers_hooks"] = {k: v for k, v in flags.items() if k.startswith(diffusers_hooks)}
        cases["step_cache_steps"] = STEP_CACHE_STEPS
        with open(os.path.join(out, "cases.json"), "w") as f:
            json.dump(cases, f, indent=1)


def loop_reference(unet, sched, noise, cond2, case, guidance):
    """A DDIM + CFG sampling loop on diffusers' UNet forward, with the paper's algorithm through
    KeyStepHooks and prior noise injection around the scheduler step (as sample_reference)."""
    sched.set_timesteps(STEPS)
    z_t = noise * sched.init_noise_sigma
    x, inj = z_t.clone(), case["inject"]
    if "deepcache_id" in case:
        hooks = OfficialDeepCache(unet, case["keys"][1], case["deepcache_id"])
    elif "partial_id" in case:
        from fd_export.methods.deepcache import official_cut

        hooks = PartialKeyStepHooks(unet, case["keys"], official_cut(unet, case["partial_id"])[2])
    else:
        hooks = KeyStepHooks(unet, case["keys"]) if len(case["keys"]) < STEPS else None
    try:
        with torch.no_grad():
            for t in sched.timesteps:
                eps = unet(sched.scale_model_input(torch.cat([x, x]), t), t, encoder_hidden_states=cond2).sample
                u, c = eps.chunk(2)
                eps = u + guidance * (c - u)
                on = inj is not None and float(t) < inj["tau"] * 1000
                if on and inj["when"] == "before":
                    x = x + inj["c"] * z_t
                x = sched.step(eps, t, x).prev_sample
                if on and inj["when"] == "after":
                    x = x + inj["c"] * z_t
    finally:
        if hooks is not None:
            hooks.remove()
    return x


def build_fmnist_tome(out: str) -> None:
    """The default model with ToMe: export and references (model level + sampling loops)."""
    import tomesd
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    from fd_export.export import export_tome
    from fd_export.folder import load_unet

    default = os.path.join(HERE, "..", "..", "models", "fmnist")
    m, _ = export_tome(default, os.path.join(out, "model"), TOME_FMNIST)
    unet, manifest = load_unet(default)
    tomesd.apply_patch(unet, use_rand=False, **TOME_FMNIST)
    cond_enc = torch.jit.load(os.path.join(default, "cond_encoder.pt"))
    null = manifest["cond"]["null_id"]
    shape = (1, 1, 28, 28)
    noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in SEEDS])
    sched = DDIMScheduler.from_config({k: v for k, v in manifest["scheduler"].items() if not k.startswith("_")})
    g = torch.Generator().manual_seed(3)
    latents, steps = torch.randn(2, 1, 28, 28, generator=g), torch.tensor([999.0, 21.0])
    with torch.no_grad():
        cond = cond_enc(torch.tensor(FMNIST_CLASSES))
        cond2 = torch.cat([cond_enc(torch.tensor([null] * len(SEEDS))), cond])
        eps = unet(latents, steps, encoder_hidden_states=cond).sample
    tensors = dict(latents=latents, t=steps, eps=eps, noise=noise)
    cases = dict(CASES)
    timesteps = None
    for name, case in cases.items():
        tensors[f"sample.{name}"] = loop_reference(unet, sched, noise, cond2, case, 3.0).contiguous()
        timesteps = [float(t) for t in sched.timesteps]
    # the committed default model itself (no ToMe) under DeepCache's own ids: 0 (its deepcache.pt
    # graphs) and 1 (its older block-level branch 0), against the transcribed official helper
    plain, _ = load_unet(default)
    for cid in (0, 1, 4):
        case = dict(keys=list(range(0, STEPS, 3)), inject=None, deepcache_id=cid)
        tensors[f"default.deepcache3_id{cid}"] = loop_reference(plain, sched, noise, cond2, case, 3.0).contiguous()
    # AdaptiveDiffusion on the default model, one sample at a time (the rule is per sample in fd)
    adaptive = {}
    for thr in ADAPTIVE_THRESHOLDS:
        outs, ran = [], []
        for r, _seed in enumerate(SEEDS):
            c2 = cond2[[r, len(SEEDS) + r]]

            def predict(x, t, c2=c2):
                u, c = plain(torch.cat([x, x]), t, encoder_hidden_states=c2).sample.chunk(2)
                return u + 3.0 * (c - u)

            sched.set_timesteps(STEPS)
            with torch.no_grad():
                x, flags = adaptive_reference(predict, sched, noise[r:r + 1].clone(), thr, 4, 3.0)
            outs.append(x)
            ran.append(flags)
        tensors[f"default.adaptive_{thr}"] = torch.cat(outs).contiguous()
        adaptive[str(thr)] = ran
    # TeaCache (the committed polynomial) and FBCache on the default model, one sample at a time
    step_cache = {}
    for plan in STEP_CACHE_PLANS:
        rule, thr, *rest = plan.split(":")
        outs, ran = [], []
        for r in range(len(SEEDS)):
            sched.set_timesteps(STEPS)
            coef = manifest["teacache"]["coefficients"] if rule == "teacache" else None
            with torch.no_grad():
                x, flags = step_cache_reference(plain, sched, noise[r:r + 1].clone(), cond2[[r, len(SEEDS) + r]], 3.0,
                                                rule, float(thr), coef, residual=rest == ["residual"])
            outs.append(x)
            ran.append(flags)
        tensors[f"default.{plan}"] = torch.cat(outs).contiguous()
        step_cache[plan] = ran
    # partial propagation on the default model: key steps 0, 4, 7 with DeepCache id 1's and 4's
    # shallow encoders recomputed (2 and 4 fresh skips), injection on
    for pid in PARTIAL_IDS:
        case = dict(keys=[0, 4, 7], inject=dict(c=0.003, tau=0.5, when="before"), partial_id=pid)
        tensors[f"default.partial_id{pid}"] = loop_reference(plain, sched, noise, cond2, case, 3.0).contiguous()
    # runtime key steps on the default model (decided on the whole batch), injection on
    runtime = {}
    for k in RUNTIME_BUDGETS:
        sched.set_timesteps(STEPS)
        hooks = RuntimeKeyHooks(plain, sched.timesteps, k)
        try:
            case = dict(keys=list(range(STEPS)), inject=dict(c=0.003, tau=0.5, when="before"))
            tensors[f"default.runtime{k}"] = loop_reference(plain, sched, noise, cond2, case, 3.0).contiguous()
        finally:
            hooks.remove()
        runtime[str(k)] = hooks.chosen
    # T-GATE on the default model (the whole batch, as the official pipeline)
    for plan in TGATE_PLANS:
        g, sp, fi, w = (int(v) for v in plan.split(":")[1:])
        sched.set_timesteps(STEPS)
        with torch.no_grad():
            tensors[f"default.{plan}"] = tgate_reference(plain, sched, noise.clone(), cond2[len(SEEDS):],
                                                         cond2[:len(SEEDS)], 3.0, g, sp, fi, w).contiguous()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(dict(classes=FMNIST_CLASSES, seeds=SEEDS, guidance=3.0, steps=STEPS, cases=cases, scheduler="ddim",
                       timesteps=timesteps, tome=m["tome"], adaptive=adaptive, step_cache=step_cache,
                       tgate=list(TGATE_PLANS), partial_ids=list(PARTIAL_IDS), runtime=runtime), f, indent=1)


def load_if_pipeline(ckpt: str):
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5EncoderModel, T5TokenizerFast

    return IFPipeline(tokenizer=T5TokenizerFast.from_pretrained(ckpt, subfolder="tokenizer"),
                      text_encoder=T5EncoderModel.from_pretrained(ckpt, subfolder="text_encoder").eval(),
                      unet=UNet2DConditionModel.from_pretrained(ckpt, subfolder="unet").eval(),
                      scheduler=DDPMScheduler.from_pretrained(ckpt, subfolder="scheduler"), safety_checker=None,
                      feature_extractor=None, watermarker=None, requires_safety_checker=False)


def load_pipeline(family: str, ckpt: str):
    if family == "if":
        return load_if_pipeline(ckpt)
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionControlNetPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    unet = None if family == "t2v" else UNet2DConditionModel.from_pretrained(ckpt, subfolder="unet").eval()
    vae = AutoencoderKL.from_pretrained(ckpt, subfolder="vae").eval()
    text = CLIPTextModel.from_pretrained(ckpt, subfolder="text_encoder").eval()
    tok = CLIPTokenizer.from_pretrained(ckpt, subfolder="tokenizer")
    if family == "sdxl":
        return StableDiffusionXLPipeline(
            vae=vae, text_encoder=text, text_encoder_2=CLIPTextModelWithProjection.from_pretrained(
                ckpt, subfolder="text_encoder_2").eval(), tokenizer=tok,
            tokenizer_2=CLIPTokenizer.from_pretrained(ckpt, subfolder="tokenizer_2"), unet=unet,
            scheduler=EulerDiscreteScheduler.from_pretrained(ckpt, subfolder="scheduler"),
            force_zeros_for_empty_prompt=True)
    if family == "controlnet":
        return StableDiffusionControlNetPipeline(
            vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
            controlnet=ControlNetModel.from_pretrained(ckpt, subfolder="controlnet").eval(),
            scheduler=DDIMScheduler.from_pretrained(ckpt, subfolder="scheduler"), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    if family == "tome":
        import tomesd

        tomesd.apply_patch(unet, use_rand=False, **TOME)
    if family == "t2v":
        from diffusers import TextToVideoSDPipeline, UNet3DConditionModel

        return TextToVideoSDPipeline(vae=vae, text_encoder=text, tokenizer=tok,
                                     unet=UNet3DConditionModel.from_pretrained(ckpt, subfolder="unet").eval(),
                                     scheduler=DDIMScheduler.from_pretrained(ckpt, subfolder="scheduler"))
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler.from_pretrained(ckpt, subfolder="scheduler"),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


class KeyStepHooks:
    """The paper's encoder propagation on diffusers' own UNet forward: the UNet is called once per
    step; at a key step its encoder outputs are captured, at other steps substituted."""

    def __init__(self, unet, keys):
        self.keys, self.step, self.cache = set(keys), -1, {}
        mods = [("conv_in", unet.conv_in), ("mid", unet.mid_block)] + [
            (f"down{i}", b) for i, b in enumerate(unet.down_blocks)]
        if getattr(unet, "transformer_in", None) is not None:  # UNet3D's temporal transformer after conv_in
            mods.append(("transformer_in", unet.transformer_in))
        self.handles = [unet.register_forward_pre_hook(self.next_step)] + [
            m.register_forward_hook(self.hook(k)) for k, m in mods]

    def next_step(self, module, args):
        self.step += 1

    def hook(self, key):
        def f(module, args, out):
            if self.step in self.keys:
                self.cache[key] = out
                return None
            return self.cache[key]
        return f

    def remove(self):
        for h in self.handles:
            h.remove()


class PartialKeyStepHooks:
    """Partial propagation (`KEYS+partial:ID`) on diffusers' own UNet forward: the UNet runs every
    step; at a key step the down blocks' skip outputs and the mid block's output are captured; at
    other steps the first `fresh` skips (conv_in and the shallow down-path layers, DeepCache id
    ID's shallow encoder) stay as computed and every deeper skip and the mid output are replaced
    by the captured ones."""

    def __init__(self, unet, keys, fresh: int):
        self.keys, self.step, self.cache, self.fresh = set(keys), -1, {}, fresh
        self.handles = [unet.register_forward_pre_hook(self.next_step),
                        unet.mid_block.register_forward_hook(self.mid)]
        first = 1  # skip 0 is conv_in's output
        for i, b in enumerate(unet.down_blocks):
            self.handles.append(b.register_forward_hook(self.down(i, first)))
            first += len(b.resnets) + (b.downsamplers is not None)

    def next_step(self, module, args):
        self.step += 1

    def mid(self, module, args, out):
        if self.step in self.keys:
            self.cache["mid"] = out
            return None
        return self.cache["mid"]

    def down(self, i, first):
        def f(module, args, out):
            h, res = out
            if self.step in self.keys:
                self.cache[i] = res
                return None
            res = tuple(r if first + k < self.fresh else c for k, (r, c) in enumerate(zip(res, self.cache[i])))
            return h, res
        return f

    def remove(self):
        for h in self.handles:
            h.remove()


class RuntimeKeyHooks:
    """Runtime key steps (`runtime:K`) on diffusers' own UNet forward: like KeyStepHooks, with the
    next key step decided when a key step's mid block has run, from its features (mid, conv_in's
    output, every down block's skips: fd's encoder features) and the previous key step's, by the
    rule of fd_sched's RuntimeKeys written out again: rate = ||f_s - f_p|| / ||f_p|| / (t_p - t_s),
    group length round-half-up((after / (left + 1)) * mean rate / rate) in [1, after + 1 - left],
    steps 0 and 1 key steps, the rest of the run one group when no pass is left. `self.chosen`
    lists the key steps."""

    def __init__(self, unet, timesteps, budget: int):
        self.t, self.budget, self.n = [float(t) for t in timesteps], budget, len(timesteps)
        self.step, self.next, self.used, self.prev, self.rates, self.chosen, self.cache = -1, 0, 0, None, [], [], {}
        mods = [("conv_in", unet.conv_in)] + [(f"down{i}", b) for i, b in enumerate(unet.down_blocks)]
        self.handles = [unet.register_forward_pre_hook(self.next_step)] + [
            m.register_forward_hook(self.hook(k)) for k, m in mods] + [unet.mid_block.register_forward_hook(self.mid)]

    def next_step(self, module, args):
        self.step += 1

    def hook(self, key):
        def f(module, args, out):
            if self.step == self.next:
                self.cache[key] = out
                return None
            return self.cache[key]
        return f

    def mid(self, module, args, out):
        if self.step != self.next:
            return self.cache["mid"]
        self.cache["mid"] = out
        feats = [out, self.cache["conv_in"]] + [r for i in range(len(self.cache) - 2) for r in self.cache[f"down{i}"][1]]
        s = self.step
        self.chosen.append(s)
        self.used += 1
        after, left = self.n - 1 - s, self.budget - self.used
        if after == 0 or left <= 0:
            length = after + 1
        elif self.prev is not None:
            tp, fp = self.prev
            num = sum(float(((a - b).double() ** 2).sum()) for a, b in zip(feats, fp))
            den = sum(float((b.double() ** 2).sum()) for b in fp)
            rate = (math.sqrt(num) / math.sqrt(den)) / abs(tp - self.t[s])
            self.rates.append(rate)
            mean = sum(self.rates) / len(self.rates)
            most = max(after + 1 - left, 1)
            length = min(max(int(math.floor(after / (left + 1) * mean / rate + 0.5)), 1), most)
        else:
            length = 1
        self.prev = (self.t[s], feats)
        self.next = s + length
        return None

    def remove(self):
        for h in self.handles:
            h.remove()


class HoldAtKeySteps:
    """One module's output held from the last key step: steps are counted by calls of `stepper`
    (the model called once per step); at a key step `target` runs and its output is kept, at the
    others it is replaced by the kept output. Used for the authors' ControlNet schedule (target =
    stepper = the ControlNet: with KeyStepHooks' substituted encoder outputs, diffusers' own
    residual addition then rebuilds exactly the features cached at the key step) and for
    FasterDiffusion-DiT's shared encoder (target = the last encoder block)."""

    def __init__(self, stepper, target, keys):
        self.keys, self.step, self.cache = set(keys), -1, None
        self.handles = [stepper.register_forward_pre_hook(self.next_step), target.register_forward_hook(self.hook)]

    def next_step(self, module, args):
        self.step += 1

    def hook(self, module, args, out):
        if self.step in self.keys:
            self.cache = out
            return None
        return self.cache

    def remove(self):
        for h in self.handles:
            h.remove()


def sample_reference(pipe, family: str, case: dict, out_dir: str) -> torch.Tensor:
    size = pipe.unet.config.sample_size
    frames = (T2V_FRAMES,) if family == "t2v" else ()
    shape = (1, pipe.unet.config.in_channels, *frames, size, size)
    noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in SEEDS])
    pipe.scheduler.set_timesteps(STEPS)
    timesteps = [float(t) for t in pipe.scheduler.timesteps]
    z_t = noise * pipe.scheduler.init_noise_sigma
    inj = case["inject"]
    orig_step = pipe.scheduler.step
    state = dict(i=-1)

    def step(model_output, timestep, sample, *args, **kwargs):
        state["i"] += 1
        # prior noise injection around the scheduler step, as the authors place it (after the UNet)
        on = inj is not None and float(timestep) < inj["tau"] * 1000
        # the text-to-video pipeline steps [B*F, C, h, w] latents: z_T folded the same way
        z = z_t.permute(0, 2, 1, 3, 4).reshape(sample.shape) if z_t.dim() == 5 and sample.dim() == 4 else z_t
        if on and inj["when"] == "before":
            sample = sample + inj["c"] * z
        out = orig_step(model_output, timestep, sample, *args, **kwargs)
        if on and inj["when"] == "after":
            if isinstance(out, tuple):
                out = (out[0] + inj["c"] * z,) + tuple(out[1:])
            else:
                out.prev_sample = out.prev_sample + inj["c"] * z
        return out

    hooks = []
    if "deepcache_id" in case:
        hooks.append(OfficialDeepCache(pipe.unet, case["keys"][1], case["deepcache_id"]))
    elif len(case["keys"]) < STEPS:
        hooks.append(KeyStepHooks(pipe.unet, case["keys"]))
        if family == "controlnet":
            hooks.append(HoldAtKeySteps(pipe.controlnet, pipe.controlnet, case["keys"]))
    kw = dict(latents=noise.clone(), output_type="latent")
    if family == "t2v":
        kw["num_frames"] = T2V_FRAMES
    if family == "controlnet":
        from PIL import Image

        kw.update(image=Image.open(os.path.join(out_dir, "control.png")), controlnet_conditioning_scale=CONTROL_SCALE)
    patches = []
    if family == "if":
        # IFPipeline takes no latents and draws DDPM step noise from a generator: both replaced
        # by fd's per-seed noise
        import diffusers.schedulers.scheduling_ddpm as ddpm_mod

        per = (1,) + tuple(shape[1:])
        orig_randn, orig_prep = ddpm_mod.randn_tensor, pipe.prepare_intermediate_images
        ddpm_mod.randn_tensor = lambda *a, **k: torch.cat([step_noise(s, state["i"], per) for s in SEEDS])
        pipe.prepare_intermediate_images = lambda *a, **k: noise.clone() * pipe.scheduler.init_noise_sigma
        patches = [lambda: setattr(ddpm_mod, "randn_tensor", orig_randn),
                   lambda: setattr(pipe, "prepare_intermediate_images", orig_prep)]
        kw = dict(output_type="pt", clean_caption=False)
    pipe.scheduler.step = step
    try:
        with torch.no_grad():
            res = pipe(prompt=PROMPTS, num_inference_steps=STEPS, guidance_scale=GUIDANCE, **kw)
            out = res.frames if family == "t2v" else res.images
    finally:
        pipe.scheduler.step = orig_step
        for undo in patches:
            undo()
        for h in hooks:
            h.remove()
    return out, noise, timesteps


def model_reference(pipe, family: str, out_dir: str) -> dict:
    """The pipeline's prompt encoding and one UNet forward with its added conditioning (and the
    ControlNet's residuals at the pipeline's conditioning scale)."""
    from PIL import Image

    t = {}
    g = torch.Generator().manual_seed(3)
    unet = pipe.unet
    size = unet.config.sample_size
    frames = (T2V_FRAMES,) if family == "t2v" else ()
    latents = torch.randn(2, unet.config.in_channels, *frames, size, size, generator=g)
    steps = torch.tensor([999.0, 21.0])
    with torch.no_grad():
        if family == "sdxl":
            states, neg, pooled, neg_pooled = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=True)
            px = size * pipe.vae_scale_factor
            time_ids = pipe._get_add_time_ids((px, px), (0, 0), (px, px), dtype=states.dtype,
                                              text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
            time_ids = time_ids.repeat(2, 1)
            eps = unet(latents, steps, encoder_hidden_states=states,
                       added_cond_kwargs=dict(text_embeds=pooled, time_ids=time_ids)).sample
            eps_neg = unet(latents, steps, encoder_hidden_states=neg,
                           added_cond_kwargs=dict(text_embeds=neg_pooled, time_ids=time_ids)).sample
            t.update(pooled=pooled, neg_pooled=neg_pooled, time_ids=time_ids, eps_neg=eps_neg)
        elif family == "if":
            states, neg = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=True, clean_caption=False)
            eps = unet(latents, steps, encoder_hidden_states=states).sample
        else:
            states, neg = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
            kw = {}
            if family == "controlnet":
                image = pipe.prepare_image(Image.open(os.path.join(out_dir, "control.png")), 16, 16, 2, 1, "cpu",
                                           torch.float32)
                down, mid = pipe.controlnet(latents, steps, encoder_hidden_states=states, controlnet_cond=image,
                                            conditioning_scale=CONTROL_SCALE, return_dict=False)
                kw = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
                t.update(control_image=image, control_mid=mid / CONTROL_SCALE)
            eps = unet(latents, steps, encoder_hidden_states=states, **kw).sample
        if family == "if":
            images = latents.clone()
        elif family == "t2v":  # per frame, as a film strip
            folded = latents.permute(0, 2, 1, 3, 4).reshape(-1, *latents.shape[1:2], *latents.shape[3:])
            images = video_strip(pipe.vae.decode(folded / pipe.vae.config.scaling_factor).sample, T2V_FRAMES)
        else:
            images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    t.update(states=states, neg_states=neg, latents=latents, t=steps, eps=eps, images=images)
    return {k: v.contiguous() for k, v in t.items()}


# AOTInductor packages beside the TorchScript graphs (fd_export.aoti; crates/fd-sched/tests/families.rs
# runs every case with both formats): the graphs the tests call, up to 63 rows (one package per graph;
# the tests' largest call is 2 seeds x CFG x STEPS rows of parallel decoding)
_LOOP = ["time_embed", "encoder", "decoder", "cond_encoder"]
_DEEPCACHE = [f"deepcache_id0_{p}" for p in ("shallow_encoder", "deep_decoder", "shallow_decoder")]
AOTI_GRAPHS = {
    "sd2": _LOOP + ["vae_decoder"] + _DEEPCACHE,
    "sdxl": _LOOP + ["cond_prepare", "vae_decoder"] + _DEEPCACHE,
    "controlnet": _LOOP + ["vae_decoder", "controlnet"],
    "if": _LOOP + ["cond_prepare"],
    "t2v": _LOOP + ["vae_decoder"],
}
AOTI_MAX_BATCH = 63


def build(family: str, out: str) -> None:
    from safetensors.torch import save_file

    from fd_export.sd import export_sd

    if family == "fmnist-tome":
        return build_fmnist_tome(out)
    if family.startswith("dit"):
        return build_dit_family(family, out)
    ckpt, model = os.path.join(out, "checkpoint"), os.path.join(out, "model")
    {"sd2": build_sd2, "sdxl": build_sdxl, "controlnet": build_controlnet, "if": build_if,
     "tome": build_tome, "t2v": build_t2v}[family](ckpt)
    aoti = AOTI_GRAPHS.get(family, False)
    if family == "if":
        from fd_export.deepfloyd_if import export_if

        export_if(ckpt, model, "cpu", "float32", name="if-tiny", aoti=aoti, aoti_max_batch=AOTI_MAX_BATCH)
    else:
        export_sd(ckpt, model, "cpu", "float32", name=f"{family}-tiny",
                  controlnet=os.path.join(ckpt, "controlnet") if family == "controlnet" else None,
                  tome=TOME if family == "tome" else None, frames=T2V_FRAMES if family == "t2v" else None, aoti=aoti,
                  aoti_max_batch=AOTI_MAX_BATCH)
    pipe = load_pipeline(family, ckpt)
    pipe.set_progress_bar_config(disable=True)
    tensors = model_reference(pipe, family, out)
    meta = dict(prompts=PROMPTS, seeds=SEEDS, guidance=GUIDANCE, steps=STEPS, cases=CASES,
                scheduler={"sdxl": "euler", "if": "ddpm"}.get(family, "ddim"),
                control_scale=CONTROL_SCALE if family == "controlnet" else None)
    cases = {k: c for k, c in CASES.items() if family in c.get("families", [family])}
    meta["cases"] = cases
    for name, case in cases.items():
        latents, noise, timesteps = sample_reference(pipe, family, case, out)
        tensors[f"sample.{name}"] = latents.contiguous()
        tensors["noise"] = noise
        meta["timesteps"] = timesteps
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main(out: str) -> None:
    from fd_export.testing import fixture_stamp, write_stamp

    stamp = fixture_stamp(out, [__file__, os.path.join(HERE, "make_sd_tiny.py"),
                                os.path.join(HERE, "..", "..", "models", "fmnist", "manifest.json")])
    if stamp is None:
        return
    shutil.rmtree(out, ignore_errors=True)
    for family in ("sd2", "sdxl", "controlnet", "if", "tome", "fmnist-tome", "dit", "dit-authors", "t2v"):
        build(family, os.path.join(out, family))
    write_stamp(out, stamp)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/families")
