#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA tests, then peer_bench.py on the GPU against Hugging Face,
# GPT-2 small and XL. Logs go to $OUT (the device tool's folder) or ./gpu-logs.
#   bash benchmarks/gpu_check.sh [folder with the GPT-2 vocab.json and merges.txt]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
vocab=${1:-../shared/data/gpt2}
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
timeout 200 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee "$out/cuda_tests.log"
timeout 150 python3 benchmarks/peer_bench.py --device cuda --repeats 5 --vocab "$vocab" 2>&1 | tee "$out/bench_gpt2.log"
timeout 240 python3 benchmarks/peer_bench.py --device cuda --size gpt2-xl --repeats 3 --only decode,prefill,batch \
    --vocab "$vocab" 2>&1 | tee "$out/bench_gpt2_xl.log"
