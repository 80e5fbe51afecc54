#!/usr/bin/env bash
# Every GPU check in one go, for a machine with one NVIDIA GPU (numbers go to BENCHMARKS.md).
#   bash bench/gpu_check.sh CORPUS_DIR [OUT_DIR]
# 1. CUDA smoke: the test suite's CLI tests on the GPU are not needed; a tiny train/eval/generate is.
# 2. Step speed at --preset seed: plain fp32 loop vs lstmgen (bf16 autocast, fused Adam) vs adaptive,
#    with a hand-tuned bf16 loop and lstmgen in fp32 beside them.
# 3. Quality per 3 minutes: --preset seed vs --preset gpu, side by side in one invocation, one after
#    the other, each with the GPU to itself (about 7 minutes with start-up and testing).
# 4. The NCCL path: torchrun with one process.
set -euo pipefail
corpus=${1:?corpus folder}
out=${2:-gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" | tee -a "$out/gpu.txt"

echo "== smoke: tiny run on cuda"
python3 -m lstmgen -q train "$corpus" --preset tiny --device cuda --epochs 0.05 --out "$out/smoke"
python3 -m lstmgen eval "$out/smoke" --device cuda | tee "$out/smoke.txt"
python3 -m lstmgen generate "$out/smoke" --device cuda --prompt 宝玉 --length 40 --seed 1 | tee -a "$out/smoke.txt"

echo "== NCCL: torchrun, one process"
python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m lstmgen -q train "$corpus" --preset tiny \
  --device cuda --epochs 0.05 --out "$out/nccl" 2>&1 | tail -3 | tee "$out/nccl.txt"
python3 -c "import json,sys; print(json.loads(open('$out/nccl/config.json').read())['world_size'], 'process(es), run folder complete')" | tee -a "$out/nccl.txt"

echo "== step speed at --preset seed"
python3 bench/step_speed.py "$corpus" --device cuda --steps 300 --warmup 30 \
  --only plain,plain-bf16,lstmgen,lstmgen-fp32,adaptive | tee "$out/step_speed.txt"

echo "== step cost of the GPU preset's shape against batch 64"
python3 bench/shape_speed.py "$corpus" --device cuda --steps 150 --warmup 30 \
  --shape gpu --shape "b64:gpu,batch_size=64" | tee "$out/shapes.txt"

echo "== 3 minutes each: seed, then gpu"
python3 bench/budget.py "$corpus" --minutes "${MINUTES:-3}" --out "$out/budget" --json "$out/contest.json" \
  --contender seed --contender gpu --device cuda 2>&1 | tee "$out/contest.txt" | grep -v "^\["
