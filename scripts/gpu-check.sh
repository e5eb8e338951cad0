#!/usr/bin/env bash
# The GPU fast path (train.step=graph) measured on a GPU machine, in two phases:
#
#   scripts/gpu-check.sh prepare        # on a CPU machine with the package index: fills .gpu-check/
#   scripts/gpu-check.sh run [OUT]      # on the GPU machine, from a copy of the tree with .gpu-check/
#
# prepare: the Python 3.12 manylinux wheels the GPU machine lacks (hydra-core, omegaconf, the
#   antlr4 runtime built here as a py3-none-any wheel, mlflow-skinny with SQLAlchemy/alembic for the
#   sqlite store, and their dependencies) and the Fashion-MNIST files, into .gpu-check/ (git-ignored,
#   < 60 MB). Torch is never downloaded: the GPU machine's own torch is used.
# run: installs those wheels offline (pip --no-index), then, within 8 minutes: the CUDA tests of the
#   training step, `python -m cifarzoo.bench` (classic vs cifarzoo eager vs cifarzoo graph, in one
#   process per row group) for ResNet-preact-20/-56 at batch 128 (fp32, amp_bf16) and WRN-28-10
#   (amp_bf16), and a short real Fashion-MNIST run through run.py with train.step=auto. Tables, JSON,
#   logs and a summary go to OUT (default: $OUT, else gpu-check-results/).
#
# Environment: PYTHON (default python3); GPU_CHECK_KIT (default <repo>/.gpu-check);
# GPU_CHECK_DRY=1 runs `run` on the CPU with tiny sizes (the plumbing, not the numbers; the CUDA
# tests then skip); GPU_CHECK_SKIP_INSTALL=1 skips the offline install (an environment that has
# the packages already).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT="${GPU_CHECK_KIT:-$REPO/.gpu-check}"
PYTHON="${PYTHON:-python3}"
SHARED_DATA="${CIFARZOO_DATA_SHARED:-$REPO/../shared/data}"
MAX_KIT_MB=60
# What cifarzoo imports beyond the GPU machine's torch/torchvision/pandas/matplotlib. mlflow-skinny
# holds the client and the sqlite tracking store; the full `mlflow` wheel would add its UI and
# pyarrow/scikit-learn/scipy (100+ MB) that a training run does not import.
REQUIREMENTS=("hydra-core>=1.3,<1.4" "omegaconf>=2.3,<2.4" "antlr4-python3-runtime==4.9.3"
              "mlflow-skinny>=3.7,<4" "sqlalchemy>=1.4,<3" "alembic>=1.0,<2,!=1.10.0")

prepare() {
  rm -rf "$KIT"
  mkdir -p "$KIT/wheels" "$KIT/data/FashionMNIST/raw"
  # antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) is published as an sdist only.
  "$PYTHON" -m pip wheel -q --no-deps -w "$KIT/wheels" "antlr4-python3-runtime==4.9.3"
  # Both tags: manylinux2014 (= manylinux_2_17) alone resolves every package today; manylinux_2_28
  # lets pip take a newer wheel published only for it (the GPU machine's torch needs glibc >= 2.28).
  "$PYTHON" -m pip download -q -d "$KIT/wheels" --find-links "$KIT/wheels" \
    --python-version 3.12 --implementation cp --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    "${REQUIREMENTS[@]}"
  cp "$SHARED_DATA"/FashionMNIST/raw/*.gz "$KIT/data/FashionMNIST/raw/"
  local mb
  mb=$(du -sm "$KIT" | cut -f1)
  echo "gpu-check: $(ls "$KIT/wheels" | wc -l) wheels and $(ls "$KIT/data/FashionMNIST/raw" | wc -l) Fashion-MNIST files in $KIT: ${mb} MB"
  if (( mb >= MAX_KIT_MB )); then
    echo "gpu-check: $KIT is ${mb} MB, over the ${MAX_KIT_MB} MB the device machine takes" >&2
    exit 1
  fi
}

install() {
  [[ -d "$KIT/wheels" ]] || { echo "gpu-check: no $KIT/wheels; run 'scripts/gpu-check.sh prepare' first" >&2; exit 1; }
  # Only the named packages and what they need that is missing; nothing already installed is replaced
  # when it satisfies them, and torch is not among them.
  "$PYTHON" -m pip install -q --no-index --find-links "$KIT/wheels" "${REQUIREMENTS[@]}"
  "$PYTHON" -c "import hydra, omegaconf, mlflow, sqlalchemy, alembic; print('gpu-check: installed hydra', hydra.__version__, 'mlflow', mlflow.__version__)"
}

# step NAME TIMEOUT CMD...: run one part, keep going if it fails, note its status.
step() {
  local name="$1" limit="$2"
  shift 2
  local start=$SECONDS rc=0
  echo "== $name" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  echo "   exit $rc after $((SECONDS - start)) s (log: $name.log)" | tee -a "$OUT/summary.txt"
  return 0
}

run() {
  OUT="$(mkdir -p "${1:-${OUT:-$REPO/gpu-check-results}}" && cd "${1:-${OUT:-$REPO/gpu-check-results}}" && pwd)"
  : >"$OUT/summary.txt"
  cd "$REPO"
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  local device=cuda bench_args=(--steps 200 --warmup 20 --workers 2) tiny=() train_tiny=() epochs=5
  if [[ "${GPU_CHECK_DRY:-0}" == 1 ]]; then
    device=cpu bench_args=(--steps 2 --warmup 1 --workers 0) epochs=1
    tiny=(data.num_train=256 data.num_test=64 train.batch_size=32 model.base_channels=4)
    train_tiny=(data.train_size=512 data.test_size=256 train.batch_size=32 model.depth=8)
  else
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check run: no CUDA device (GPU_CHECK_DRY=1 for a CPU dry run)')"
  fi
  [[ "${GPU_CHECK_SKIP_INSTALL:-0}" == 1 ]] || install
  {
    date -u +"date: %Y-%m-%d %H:%M UTC"
    "$PYTHON" -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda); print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  } | tee -a "$OUT/summary.txt"

  step cuda-tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_steps.py tests/test_distill.py -k "cuda"
  tail -n 3 "$OUT/cuda-tests.log" | tee -a "$OUT/summary.txt"

  local rows=(
    "preact20-fp32 model=resnet_preact model.depth=20 precision=fp32"
    "preact20-bf16 model=resnet_preact model.depth=20 precision=amp_bf16"
    "preact56-fp32 model=resnet_preact model.depth=56 precision=fp32"
    "preact56-bf16 model=resnet_preact model.depth=56 precision=amp_bf16"
    "wrn28-10-bf16 model=wrn model.depth=28 model.widen=10 precision=amp_bf16"
  )
  local row name
  for row in "${rows[@]}"; do
    read -r name overrides <<<"$row"
    # shellcheck disable=SC2086  # the overrides are words
    step "bench-$name" 100 "$PYTHON" -m cifarzoo.bench "${bench_args[@]}" --out "$OUT/bench-$name.json" \
      $overrides train.batch_size=128 train.device=$device ${tiny[@]+"${tiny[@]}"}
    grep -v "^bench:" "$OUT/bench-$name.log" | tee -a "$OUT/summary.txt" || true
  done

  step train-fashion-mnist 180 "$PYTHON" run.py data=fashion_mnist "data.root=$KIT/data" data.download=true \
    model=resnet_preact model.depth=20 train.batch_size=128 "train.epochs=$epochs" train.step=auto \
    train.device=$device "tracking.uri=sqlite:///$OUT/mlflow.db" tracking.experiment=gpu-check \
    "hydra.run.dir=$OUT/train-run" ${train_tiny[@]+"${train_tiny[@]}"}
  grep -E "training step:|epoch [0-9]+/|Error|error:" "$OUT/train-fashion-mnist.log" | tee -a "$OUT/summary.txt" || true
  echo "gpu-check: results in $OUT (summary.txt)"
}

case "${1:-}" in
  prepare) prepare ;;
  install) install ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/gpu-check.sh prepare | install | run [OUT]" >&2; exit 2 ;;
esac
