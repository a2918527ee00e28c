# Sourced by experiments/gpu/gpu_check.sh and experiments/gpu/gpu_sd15_bench.sh once R (the report folder)
# is set: puts the libtorch of the machine's PyTorch (python3 -c 'import torch') and its NVIDIA libs
# on LD_LIBRARY_PATH, defines `step CMD...` (echo + run, output appended to $R/info.txt, exit status
# kept) and starts $R/info.txt with the date, GPU, driver and Python package versions.
TORCH_DIR=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))') || exit 1
NV=$(find "$TORCH_DIR/.." -path '*nvidia*' -type d -name lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$TORCH_DIR/lib:$NV${LD_LIBRARY_PATH:-}"

step() { echo "+ $*" | tee -a "$R/info.txt"; "$@" 2>&1 | tee -a "$R/info.txt"; return "${PIPESTATUS[0]}"; }

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; \
  python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda)'; \
  python3 -c 'import diffusers; print("diffusers", diffusers.__version__)' 2>/dev/null; } \
  2>&1 | tee "$R/info.txt"
