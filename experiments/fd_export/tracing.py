"""Tracing and saving TorchScript graphs: one module per file, or several methods of one module
sharing their parameters; frozen, written to a temp name and renamed."""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
from torch import nn


def freeze_and_save(traced, methods: Sequence[str], path: str) -> None:
    """Freeze a traced module (weights become constants of each method's graph, module attribute
    lookups disappear; `methods` stay callable) and save it via a temp file + rename.

    Freezing changes no output bit (checked by tests/test_export.py); on the default model its
    speed gain is within noise on a CPU (experiments/bench/bench_graph_variants.py) and the file is
    smaller (weights shared by several methods are stored once).
    A frozen module has no state_dict: exports that Python must rebuild as an eager diffusers model
    keep the weights beside it (`save_weights`)."""
    frozen = torch.jit.freeze(traced.eval(), preserved_attrs=list(methods))
    tmp = path + ".tmp"
    frozen.save(tmp)
    os.replace(tmp, path)


def trace_and_save(module, inputs, path):
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # shape asserts inside diffusers blocks become constants; batch size stays dynamic
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, tuple(inputs), check_trace=False, strict=False)
    freeze_and_save(traced, ["forward"], path)


def trace_methods(parts: dict, path: str) -> None:
    """Trace every (module, example inputs) of `parts` as a method named by its key of one
    TorchScript module; parameters shared between the parts are saved once."""
    holder = nn.ModuleDict({k: m for k, (m, _) in parts.items()})

    def method(key):
        return lambda self, *args: self.parts[key](*args)

    cls = type("SplitUNet", (nn.Module,), {k: method(k) for k in parts})
    wrapper = cls()
    wrapper.parts = holder
    wrapper.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shape asserts inside diffusers blocks become constants
        traced = torch.jit.trace_module(wrapper, {k: tuple(inp) for k, (_, inp) in parts.items()}, check_trace=False)
    freeze_and_save(traced, list(parts), path)
