#!/usr/bin/env bash
# Issue 7.7's quality contest on a lent GPU in one device call: `--preset seed` and each candidate
# train 3 minutes on the four classic novels, one after the other, each with the GPU to itself
# (bench/budget.py); the CUDA tests run first.
#
# On this (CPU) machine, once per session, before the device call:
#   bash bench/gpu_contest.sh prepare
# puts what the GPU image lacks into git-ignored folders that the call carries: jieba and rjieba as
# wheels in .whl/ (the image has torch, numpy, safetensors, psutil, pytest) and the corpus in
# .devdata/ (../shared does not travel). Then, with the device tool (carry [".whl", ".devdata"],
# timeout_s 600 for the tests and two contenders):
#   bash bench/gpu_contest.sh run "emalr16:gpu,ema_decay=0.999,lr=0.016" [more NAME:PRESET,... candidates]
# NOTESTS=1 skips the tests; NOSEED=1 leaves the seed out (compare a candidate only with a seed of the
# same call or machine: the split changes when the advert rule does); MINUTES=3. Output goes to $OUT
# (the device tool's folder that comes back) or gpu-contest/.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?"prepare, or run CANDIDATE..."}
shift

if [ "$mode" = prepare ]; then
  mkdir -p .git/info
  for folder in /.whl/ /.devdata/; do
    grep -qxF "$folder" .git/info/exclude 2>/dev/null || echo "$folder" >> .git/info/exclude
  done
  rm -rf .whl && mkdir -p .whl .devdata
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "rjieba==0.2.2"
  python3 -m pip wheel -q --no-deps -w .whl "jieba==0.42.1"  # pure Python, published as a source archive only
  rm -rf .devdata/sidamingzhu && cp -r ../shared/corpora/sidamingzhu .devdata/
  du -sh .whl .devdata
  exit 0
fi

[ "$mode" = run ] || { echo "usage: $0 prepare | run CANDIDATE..." >&2; exit 2; }
out=${OUT:-gpu-contest}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
corpus=.devdata/sidamingzhu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" \
  | tee -a "$out/gpu.txt"
git log -1 --format='code at %h' 2>/dev/null | tee -a "$out/gpu.txt" || true

if [ -z "${NOTESTS:-}" ]; then
  echo "== the tests that use the GPU"
  # a failing test is reported, not fatal: the contest, which the call is for, runs anyway
  python3 -m pytest -q -p no:cacheprovider tests/test_optim.py tests/test_model.py > "$out/tests-full.txt" 2>&1 \
    || echo "TESTS FAILED: see tests-full.txt; the contest runs anyway" | tee -a "$out/tests-full.txt"
  tail -3 "$out/tests-full.txt" | tee "$out/tests.txt"
fi

contenders=()
[ -n "${NOSEED:-}" ] || contenders+=(--contender seed)
for candidate in "$@"; do contenders+=(--contender "$candidate"); done
echo "== ${MINUTES:-3} minutes each: ${contenders[*]}"
runs=$(mktemp -d /tmp/gpu-contest-XXXX)  # the runs' weights stay here (the seed's are GBs); their records come back
python3 bench/budget.py "$corpus" --minutes "${MINUTES:-3}" --out "$runs" --json "$out/contest.json" \
  "${contenders[@]}" --device cuda 2>&1 | tee "$out/contest.txt" | grep -v '^\[' || echo "a contender failed: see contest.txt"
for run in "$runs"/*/; do  # every validation of every contender: the curve, not only the best point
  name=$(basename "$run"); mkdir -p "$out/runs/$name"
  cp "$run"metrics.jsonl "$run"config.json "$out/runs/$name/" 2>/dev/null || true
done
