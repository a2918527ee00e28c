"""Reference outputs written at export time: what Rust sampling must reproduce."""
from __future__ import annotations

from collections.abc import Callable

import torch


def write_pipeline_reference(predict: Callable, in_channels: int, sample_size: int, null_id: int,
                             scheduler_config: dict, out_path: str, seeds=(0, 1), classes=(7, 8), steps: int = 50,
                             guidance: float = 3.0) -> None:
    """The plain diffusers DDIM loop with classifier-free guidance on a few seeds: what Rust sampling
    must equal. `predict(x, t, class_ids)` is the model's noise prediction (a UNet through its
    class encoder, a DiT on its labels), on the [null; classes] batch."""
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    sched = DDIMScheduler(**{k: v for k, v in scheduler_config.items() if not k.startswith("_")})
    sched.set_timesteps(steps)
    shape = (1, in_channels, sample_size, sample_size)
    noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
    x = noise * sched.init_noise_sigma
    ids = torch.cat([torch.full((len(seeds),), null_id), torch.tensor(classes)])
    with torch.no_grad():
        for t in sched.timesteps:
            eps = predict(torch.cat([x, x]), t, ids)[:, :in_channels]
            u, c = eps.chunk(2)
            x = sched.step(u + guidance * (c - u), t, x).prev_sample
    save_file(dict(samples=x.contiguous(), seeds=torch.tensor(seeds), classes=torch.tensor(classes),
                   steps=torch.tensor(steps), guidance=torch.tensor(guidance)), out_path)
