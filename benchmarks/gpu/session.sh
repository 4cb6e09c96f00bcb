#!/usr/bin/env bash
# Every GPU check and figure of issue #15 in one device call (about 8 minutes on one H200), so a
# session that is lent a device spends its 15 minutes on one run and has time for a rerun:
#
#   here:    bash benchmarks/gpu/fetch_wheels.sh     # the wheels the device image lacks, into .whl/
#   device:  run(command="bash benchmarks/gpu/session.sh", carry=[".whl"], timeout_s=560)
#
# Installs nothing from a network (the carried wheels go to /tmp/site; privdyn runs from src/).
# Writes the whole log to $OUT/gpu_session.txt and the CUDA quickstart's manifest beside it.
# Each step has its own time limit, so one slow step cannot cost the others their figures.
set -uo pipefail
OUT=${OUT:-/tmp/privdyn_gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_session.txt") 2>&1
step() { echo; echo "=== $1 ($(date -u +%T))"; }

step "environment"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "no wheels: run benchmarks/gpu/fetch_wheels.sh here and carry .whl"; exit 2; }
export PYTHONPATH="$PWD/src:/tmp/site" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, privdyn; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

step "correctness: the tests with CUDA branches, on the GPU"
timeout 150 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_models.py tests/test_training.py tests/test_precision.py

step "throughput: quickstart MLP and CNN (fp32, bf16), training and evaluation, FLOP rate"
timeout 90 python3 benchmarks/train_throughput.py --arch mlp,cnn --device cuda --rounds 3 --eval --flops \
  --precision fp32,bf16

step "throughput: WRN-28-2 and ResNet-18 on CIFAR-10-shaped data, channels-last, fp32 and bf16"
timeout 240 python3 benchmarks/train_throughput.py --arch wrn,resnet18 --dataset cifar-like-random --device cuda \
  --n-pool 8192 --group-size 16 --rounds 2 --eval --flops --memory-format channels_last --precision fp32,bf16

step "end to end: the quickstart on CUDA (train, score, analyze, report), and its time split"
rm -rf /tmp/gpu_quickstart
timeout 120 python3 -m privdyn run --out /tmp/gpu_quickstart --no-progress --set training.device=cuda \
  && cp /tmp/gpu_quickstart/manifest.json "$OUT/quickstart_cuda_manifest.json" \
  && python3 benchmarks/pipeline_cost.py --run /tmp/gpu_quickstart
step "done"
