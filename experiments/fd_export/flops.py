"""FLOP counting: torch.utils.flop_counter (FLOPs = 2 x MACs) with attention counted on every
device. The one counter the exporter and experiments/recount_flops.py use."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

# torch.utils.flop_counter counts attention (2 x MACs of Q K^T and A V) for the CUDA SDPA kernels
# but has no formula for the CPU flash kernel, so on CPU every attention layer counted 0 FLOPs
# (seen: SD-1.5 677 GFLOPs/forward exported on CPU vs 803 on CUDA). Use torch's own SDPA formula.
def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter_mode() -> FlopCounterMode:
    """torch's FLOP counter (2 x MACs) with attention counted on every device: the one counter the
    exporter and experiments/recount_flops.py use."""
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops})


def count_flops(module: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    with flop_counter_mode() as fc, torch.no_grad():
        module(*inputs)
    return int(fc.get_total_flops())


def n_params(*modules) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())
