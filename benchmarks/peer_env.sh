#!/usr/bin/env bash
# Create the EleutherAI knowledge-neurons 0.0.2 environment the attribution benchmark compares against:
# benchmarks/.peer-venv with torch==2.13.0 (CPU, installed first and pinned), transformers<5, einops,
# numpy, tqdm, and knowledge-neurons==0.0.2 installed with --no-deps (its unpinned torch requirement
# could otherwise pull a CUDA build; seaborn, also listed, is never imported).
# Idempotent; bench_attribution.py does the same by itself when it needs the environment.
#   usage: bash benchmarks/peer_env.sh [python]     (python: kn's interpreter, default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${1:-python3}" benchmarks/bench_attribution.py --setup-peer
