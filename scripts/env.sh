# Shared environment for fd: sourced by scripts/setup.sh, the justfile and .ci/run.
# The venv lives in a per-user cache keyed by the torch version, so fresh clones (CI included) reuse it.
FD_TORCH_VERSION="2.13.0"
FD_CACHE="${FD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fd}"
FD_VENV="${FD_VENV:-$FD_CACHE/venv-torch-$FD_TORCH_VERSION}"
export FD_TORCH_VERSION FD_CACHE FD_VENV
export VIRTUAL_ENV="$FD_VENV"
export LIBTORCH_USE_PYTORCH=1
case ":$PATH:" in
  *":$FD_VENV/bin:"*) ;;
  *) export PATH="$FD_VENV/bin:$HOME/.cargo/bin:$PATH" ;;
esac
