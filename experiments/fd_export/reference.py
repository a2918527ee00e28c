"""Reference outputs written at export time: what Rust sampling must reproduce."""
from __future__ import annotations

import torch


def write_pipeline_reference(unet, cond_encoder, null_id: int, scheduler_config: dict, out_path: str,
                             seeds=(0, 1), classes=(7, 8), steps: int = 50, guidance: float = 3.0) -> None:
    """The plain diffusers pipeline loop (DDIM, CFG) on a few seeds: what Rust sampling must equal."""
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    sched = DDIMScheduler(**{k: v for k, v in scheduler_config.items() if not k.startswith("_")})
    sched.set_timesteps(steps)
    shape = (1, unet.config.in_channels, *([unet.config.sample_size] * 2))
    noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
    x = noise * sched.init_noise_sigma
    with torch.no_grad():
        cond = torch.cat([cond_encoder(torch.full((len(seeds),), null_id)), cond_encoder(torch.tensor(classes))])
        for t in sched.timesteps:
            eps = unet(torch.cat([x, x]), t, encoder_hidden_states=cond).sample
            u, c = eps.chunk(2)
            x = sched.step(u + guidance * (c - u), t, x).prev_sample
    save_file(dict(samples=x.contiguous(), seeds=torch.tensor(seeds), classes=torch.tensor(classes),
                   steps=torch.tensor(steps), guidance=torch.tensor(guidance)), out_path)
