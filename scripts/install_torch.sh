#!/bin/sh
# Install torch into a virtual environment, pinned, as a CPU or a CUDA build.
#
# Usage: scripts/install_torch.sh VENV_PYTHON
#
# Environment:
#   EMBER_TORCH      cpu (default) or cuda.
#   TORCH_VERSION    the release to pin (default 2.13.0).
#   TORCH_INDEX_URL  the package index that serves torch. For cpu, the
#                    default is a "+cpu" build that pip's configured sources
#                    offer (a local wheel on CI), else the index
#                    https://download.pytorch.org/whl/cpu. For cuda, the
#                    default is https://pypi.org/simple, because its Linux
#                    x86_64 torch wheels are CUDA builds.
#
# A CPU install never pulls a CUDA build: an unpinned `pip install torch` on
# Linux downloads several GB of CUDA libraries from PyPI. The script does
# nothing when the requested version and variant are already installed, and
# exits non-zero when the installed build is not the requested variant.
set -eu

python=${1:?usage: scripts/install_torch.sh VENV_PYTHON}
variant=${EMBER_TORCH:-cpu}
version=${TORCH_VERSION:-2.13.0}
index_url=${TORCH_INDEX_URL:-}

case $variant in
  cpu | cuda) ;;
  *)
    echo "error: EMBER_TORCH must be cpu or cuda, got '$variant'" >&2
    exit 2
    ;;
esac

# Print "VERSION cpu" or "VERSION cuda" for the installed torch, or nothing.
installed_torch() {
  "$python" -c '
import importlib.util
if importlib.util.find_spec("torch") is not None:
    import torch
    print(torch.__version__.split("+")[0], "cpu" if torch.version.cuda is None else "cuda")
' 2>/dev/null || true
}

if [ "$(installed_torch)" = "$version $variant" ]; then
  echo "torch $version ($variant) is already installed"
  exit 0
fi

pip() { "$python" -m pip "$@"; }

if [ "$variant" = cpu ]; then
  if [ -n "$index_url" ]; then
    pip install "torch==$version" --index-url "$index_url" --extra-index-url https://pypi.org/simple
  else
    # Ask pip which build its configured sources offer. A "+cpu" build (a
    # local wheel on CI, or a configured CPU index) is installed by its exact
    # version. Any other build may be PyPI's CUDA build, so the CPU index
    # is used instead.
    offered=$(pip install --dry-run --quiet --no-deps --ignore-installed --report - "torch==$version" 2>/dev/null |
      "$python" -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' 2>/dev/null) ||
      offered=""
    case $offered in
      *+cpu*)
        echo "installing torch $offered from the configured sources"
        pip install "torch==$offered"
        ;;
      *)
        pip install "torch==$version" --index-url https://download.pytorch.org/whl/cpu \
          --extra-index-url https://pypi.org/simple
        ;;
    esac
  fi
else
  # Ignore pip configuration here, so that a local CPU wheel offered by
  # find-links cannot win over the CUDA build.
  PIP_CONFIG_FILE=/dev/null pip install "torch==$version" --index-url "${index_url:-https://pypi.org/simple}"
fi

found=$(installed_torch)
if [ "$found" != "$version $variant" ]; then
  echo "error: requested torch $version ($variant) but found '${found:-no torch}'." >&2
  if [ "$variant" = cpu ]; then
    echo "Set TORCH_INDEX_URL to an index with CPU wheels (https://download.pytorch.org/whl/cpu)." >&2
  else
    echo "Set TORCH_INDEX_URL to an index with CUDA wheels (https://download.pytorch.org/whl/cu128)." >&2
  fi
  exit 1
fi
echo "installed torch $version ($variant)"
