#!/usr/bin/env bash
# The GPU's speed and plumbing checks in one device call (numbers go to BENCHMARKS.md); the 3-minute
# quality contest is bench/gpu_contest.sh, a call of its own (this and that together would pass the
# device tool's 600 s a command).
#   bash bench/gpu_contest.sh prepare                      # here, on the CPU machine, once
#   bash bench/gpu_check.sh [CORPUS_DIR]                   # on the lent machine, carry [".whl", ".devdata"]
# 1. CUDA smoke: a tiny train/eval/generate, and eval --adapt / generate --context.
# 2. The NCCL path: torchrun with one process.
# 3. Step speed at --preset seed: plain fp32 loop vs lstmgen (bf16 autocast, fused Adam) vs adaptive,
#    with a hand-tuned bf16 loop and lstmgen in fp32 beside them.
# 4. What a step of the GPU preset's shape costs against batch 64.
# Output goes to $OUT (the device tool's folder that comes back) or gpu-check/; run folders stay in /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${1:-.devdata/sidamingzhu}
out=${OUT:-gpu-check}
mkdir -p "$out"
runs=$(mktemp -d /tmp/gpu-check-XXXX)
# what the GPU image lacks (jieba, rjieba), as gpu_contest.sh installs it; lstmgen from this checkout
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" | tee -a "$out/gpu.txt"

echo "== smoke: tiny run on cuda"
python3 -m lstmgen -q train "$corpus" --preset tiny --device cuda --epochs 0.05 --out "$runs/smoke"
python3 -m lstmgen eval "$runs/smoke" --device cuda | tee "$out/smoke.txt"
python3 -m lstmgen generate "$runs/smoke" --device cuda --prompt 宝玉 --length 40 --seed 1 | tee -a "$out/smoke.txt"
# adaptation on CUDA (issue 30): eval --adapt both keeps both scores; generate after a context
python3 -m lstmgen eval "$runs/smoke" --device cuda --adapt both --json | tee -a "$out/smoke.txt"
head -c 3000 "$(ls "$corpus"/*.txt | head -1)" > "$runs/context.txt" || true
python3 -m lstmgen generate "$runs/smoke" --device cuda --context "$runs/context.txt" --prompt 宝玉 --length 40 \
  --seed 1 | tee -a "$out/smoke.txt"

echo "== NCCL: torchrun, one process"
python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m lstmgen -q train "$corpus" --preset tiny \
  --device cuda --epochs 0.05 --out "$runs/nccl" 2>&1 | tail -3 | tee "$out/nccl.txt"
python3 -c "import json,sys; print(json.loads(open('$runs/nccl/config.json').read())['world_size'], 'process(es), run folder complete')" | tee -a "$out/nccl.txt"

echo "== step speed at --preset seed"
python3 bench/step_speed.py "$corpus" --device cuda --steps 300 --warmup 30 \
  --only plain,plain-bf16,lstmgen,lstmgen-fp32,adaptive | tee "$out/step_speed.txt"

echo "== step cost of the GPU preset's shape against batch 64"
python3 bench/shape_speed.py "$corpus" --device cuda --steps 150 --warmup 30 \
  --shape gpu --shape "b64:gpu,batch_size=64" | tee "$out/shapes.txt"
