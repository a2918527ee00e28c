"""fd_export: everything Python does for fd — export a diffusers UNet2DConditionModel as split
TorchScript graphs + manifest.json, count their FLOPs, and write the reference outputs Rust must
reproduce. Installed editable by scripts/setup.sh (`pip install -e experiments`), so scripts and tests
import it without path tricks.

  graphs     graph wrappers (time_embed / encoder / decoder / analysis / VAE / text encoder)
  methods    one module per caching method: its graphs, its add_* helper, its fit, its reference
  flops      torch.utils.flop_counter with attention counted on every device
  tracing    tracing and saving TorchScript graphs
  folder     a model folder: hashes, manifest.json, the UNet weights and the eager UNet rebuilt
  export     the split export + manifest.json (schema.SCHEMA_VERSION, the same number fd-model reads)
  errors     ExportError: bad input, raised by the library, turned into an exit code by scripts
  reference  plain diffusers pipeline references written at export time
  fmnist     the default model's data, architecture, training schedule and checkpoint export
  forms      which UNet2DConditionModel configs fd exports (the rest refused, field named)
  sd         Stable Diffusion 1.x / 2.x / XL folders (+ ControlNet) and the SD-1.5 architecture config
  deepfloyd_if  DeepFloyd-IF stage I folders (T5 prompt encoder, learned-range variance)
  clip       CLIP towers for CLIP score
  testing    tiny random-init models for test fixtures
"""
from .errors import ExportError
from .export import export_model
from .flops import count_flops, flop_counter_mode, n_params
from .folder import sha256
from .schema import SCHEMA_VERSION
from .tracing import trace_and_save, trace_methods

__all__ = ["SCHEMA_VERSION", "ExportError", "count_flops", "export_model", "flop_counter_mode", "n_params", "sha256",
           "trace_and_save", "trace_methods"]
