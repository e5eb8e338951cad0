#!/usr/bin/env bash
# The GPU fast path (train.step=graph) measured on a GPU machine, in two phases:
#
#   scripts/gpu-check.sh prepare        # on a CPU machine with the package index: fills .gpu-check/
#   scripts/gpu-check.sh run [OUT]      # on the GPU machine, from a copy of the tree with .gpu-check/
#
# prepare: the Python 3.12 manylinux wheels the GPU machine lacks (hydra-core, omegaconf, the
#   antlr4 runtime built here as a py3-none-any wheel, mlflow-skinny with SQLAlchemy/alembic for the
#   sqlite store, and their dependencies) and the Fashion-MNIST .gz files, into .gpu-check/
#   (git-ignored). Prints the kit's size and fails above 60 MiB (the device call carries 64 MiB).
#   Torch is never downloaded: the GPU machine's own torch is used.
# run: never writes into the kit (the data is unpacked, MLflow stores and run dirs live in a temp
#   dir, removed at the end). Installs the wheels offline (pip --no-index), then, in phases whose
#   budgets add up to 480 s (the script stops itself by then):
#     bench     `python -m cifarzoo.bench` (cifarzoo eager vs graph vs the classic pipeline), one
#               process per row: ResNet-preact-20 fp32 with channels_last on and off, -20 amp_bf16,
#               -56 fp32 and amp_bf16, WRN-28-10 amp_bf16, all at batch 128;
#     profile   torch.profiler over 20 graph replays of ResNet-preact-20 fp32 (top kernels);
#     train     a short real Fashion-MNIST run through run.py with train.step=auto;
#     cuda-tests the CUDA tests of the training step and of distillation.
#   OUT (default: $OUT, else gpu-check-results/) gets at most 6 plain files, each written as soon as
#   its part finishes: summary.txt (the tables, the GPU's name, each phase's exit status),
#   bench.json (one entry per row), profile.txt, train.json (the run's status, step, metrics) and
#   logs.tar.gz (every phase's log).
#
# Environment: PYTHON (default: the Makefile's .venv, else python3; it must have torch); GPU_CHECK_KIT (default <repo>/.gpu-check);
# GPU_CHECK_DRY=1 runs `run` on the CPU with tiny sizes, every row shrunk (the plumbing, not the
# numbers; the CUDA tests then skip; under 3 minutes on a 2-core CPU machine); GPU_CHECK_SKIP_INSTALL=1 skips the offline install (an environment that has
# the packages already).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT="${GPU_CHECK_KIT:-$REPO/.gpu-check}"
# The Python with torch: $PYTHON, else the Makefile's .venv, else python3.
PYTHON="${PYTHON:-$( [[ -x "$REPO/.venv/bin/python" ]] && echo "$REPO/.venv/bin/python" || echo python3)}"
SHARED_DATA="${CIFARZOO_DATA_SHARED:-$REPO/../shared/data}"
MAX_KIT_MIB=60
BUDGET_S=480  # all phases of `run` together, install included (a device call may run 600 s)
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
  local bytes
  bytes=$(kit_bytes)
  echo "gpu-check: $(ls "$KIT/wheels" | wc -l) wheels and $(ls "$KIT/data/FashionMNIST/raw" | wc -l) Fashion-MNIST files in $KIT: $(mib "$bytes") MiB"
  if (( bytes > MAX_KIT_MIB * 1024 * 1024 )); then
    echo "gpu-check: $KIT is $(mib "$bytes") MiB, over the ${MAX_KIT_MIB} MiB a device call can carry beside the tree" >&2
    exit 1
  fi
}

kit_bytes() { du -sb "$KIT" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

install() {
  [[ -d "$KIT/wheels" ]] || { echo "gpu-check: no $KIT/wheels; run 'scripts/gpu-check.sh prepare' first" >&2; exit 1; }
  # Only the named packages and what they need that is missing; nothing already installed is replaced
  # when it satisfies them, and torch is not among them.
  # A dry run only checks that the wheels resolve offline (it must not change this machine's environment).
  "$PYTHON" -m pip install -q --no-index --find-links "$KIT/wheels" $([[ "${GPU_CHECK_DRY:-0}" == 1 ]] && echo --dry-run) \
    "${REQUIREMENTS[@]}"
  "$PYTHON" -c "import hydra, omegaconf, mlflow, sqlalchemy, alembic; print('gpu-check: installed hydra', hydra.__version__, 'mlflow', mlflow.__version__)"
}

# phase NAME BUDGET CMD...: run one part with its own time limit (at most what is left of BUDGET_S),
# its output into the logs; note its exit status in the summary; keep going if it fails.
phase() {
  local name="$1" budget="$2"
  shift 2
  local left=$((DEADLINE - SECONDS)) start=$SECONDS rc=0
  (( budget < left )) || budget=$left
  if (( budget < 5 )); then
    echo "== $name: skipped, the ${BUDGET_S} s budget is spent" | tee -a "$OUT/summary.txt"
    return 1
  fi
  echo "== $name (budget ${budget} s)" | tee -a "$OUT/summary.txt"
  timeout -k 5 "$budget" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  echo "   exit $rc after $((SECONDS - start)) s$([[ $rc == 124 ]] && echo ' (time-out)')" | tee -a "$OUT/summary.txt"
  return $rc
}

bundle_logs() {
  [[ -n "${LOGS:-}" && -d "$LOGS" ]] && tar -czf "$OUT/logs.tar.gz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")" 2>/dev/null
  [[ -n "${WORK:-}" ]] && rm -rf "$WORK"
  return 0
}

run() {
  OUT="$(mkdir -p "${1:-${OUT:-$REPO/gpu-check-results}}" && cd "${1:-${OUT:-$REPO/gpu-check-results}}" && pwd)"
  DEADLINE=$((SECONDS + BUDGET_S))
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
  LOGS="$WORK/logs"
  mkdir -p "$LOGS" "$WORK/data/FashionMNIST/raw"
  rm -f "$OUT/summary.txt" "$OUT/bench.json" "$OUT/train.json" "$OUT/profile.txt" "$OUT/logs.tar.gz"
  : >"$OUT/summary.txt"
  trap bundle_logs EXIT
  cd "$REPO"
  "$PYTHON" -c "import torch" 2>/dev/null || { echo "gpu-check: $PYTHON has no torch; set PYTHON=/path/to/python" | tee -a "$OUT/summary.txt"; exit 1; }
  # Nothing of the run lands in the tree or the kit: outputs, MLflow store, bytecode in the temp dir.
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
  export CIFARZOO_OUTPUTS="$WORK/outputs" MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
  export MLFLOW_DISABLE_TELEMETRY=true CIFARZOO_LOG_MODEL=false
  local device=cuda bench_args=(--steps 200 --warmup 20 --workers 2) epochs=5 replays=20
  local sizes=(preact20:20 preact56:56) wrn=(model.depth=28 model.widen=10) tiny=() train_tiny=()
  if [[ "${GPU_CHECK_DRY:-0}" == 1 ]]; then
    device=cpu bench_args=(--steps 2 --warmup 1 --workers 0) epochs=1 replays=2
    sizes=(preact20:8 preact56:8) wrn=(model.depth=10 model.widen=1)
    tiny=(data.num_train=128 data.num_test=32 model.base_channels=4 train.batch_size=32)
    train_tiny=(data.train_size=256 data.test_size=128 train.batch_size=32 model.depth=8 model.base_channels=4)
  else
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check run: no CUDA device (GPU_CHECK_DRY=1 for a CPU dry run)')"
  fi
  cp "$KIT"/data/FashionMNIST/raw/*.gz "$WORK/data/FashionMNIST/raw/"  # unpacked there, not in the kit
  if [[ "${GPU_CHECK_SKIP_INSTALL:-0}" != 1 ]]; then
    phase install 40 bash "$REPO/scripts/gpu-check.sh" install || { echo "gpu-check: the offline install failed (logs.tar.gz: install.log)" | tee -a "$OUT/summary.txt"; exit 1; }
  fi
  {
    date -u +"date: %Y-%m-%d %H:%M UTC"
    "$PYTHON" -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda); print('GPU:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none (cpu dry run)')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  } | tee -a "$OUT/summary.txt"

  local d20=${sizes[0]#*:} d56=${sizes[1]#*:}
  local rows=(
    "preact20-fp32-channels_last model=resnet_preact model.depth=$d20 precision=fp32 train.channels_last=$([[ $device == cuda ]] && echo true || echo false)"
    "preact20-fp32-contiguous model=resnet_preact model.depth=$d20 precision=fp32 train.channels_last=false"
    "preact20-bf16 model=resnet_preact model.depth=$d20 precision=amp_bf16"
    "preact56-fp32 model=resnet_preact model.depth=$d56 precision=fp32"
    "preact56-bf16 model=resnet_preact model.depth=$d56 precision=amp_bf16"
    "wrn28-10-bf16 model=wrn ${wrn[*]} precision=amp_bf16"
  )
  local row name overrides
  for row in "${rows[@]}"; do
    read -r name overrides <<<"$row"
    # shellcheck disable=SC2086  # the overrides are words
    if phase "bench-$name" 40 "$PYTHON" -m cifarzoo.bench "${bench_args[@]}" --out "$WORK/bench-$name.json" \
        $overrides train.batch_size=128 train.device=$device ${tiny[@]+"${tiny[@]}"}; then
      "$PYTHON" scripts/gpu_check_results.py bench-row "$name" "$WORK/bench-$name.json" "$OUT/bench.json"
    fi
    grep -v "^bench:" "$LOGS/bench-$name.log" | tail -n 8 | tee -a "$OUT/summary.txt" || true
  done

  phase profile 40 "$PYTHON" scripts/gpu_profile.py --replays "$replays" train.device=$device \
    ${tiny[@]+"${tiny[@]}"} $([[ $device == cpu ]] && echo model.depth=8) || true
  cp "$LOGS/profile.log" "$OUT/profile.txt" 2>/dev/null || true
  grep "^profile:" "$OUT/profile.txt" 2>/dev/null | tee -a "$OUT/summary.txt" || true

  phase train-fashion-mnist 90 "$PYTHON" run.py data=fashion_mnist "data.root=$WORK/data" \
    model=resnet_preact model.depth=20 train.batch_size=128 "train.epochs=$epochs" train.step=auto \
    train.device=$device "tracking.uri=sqlite:///$WORK/mlflow.db" tracking.experiment=gpu-check \
    tracking.system_metrics=false "hydra.run.dir=$WORK/train-run" ${train_tiny[@]+"${train_tiny[@]}"} || true
  "$PYTHON" scripts/gpu_check_results.py train "sqlite:///$WORK/mlflow.db" gpu-check "$OUT/train.json" \
    >>"$LOGS/train-fashion-mnist.log" 2>&1 || true
  grep -E "training step:|epoch [0-9]+/|Error|error:" "$LOGS/train-fashion-mnist.log" | tail -n 12 | tee -a "$OUT/summary.txt" || true

  phase cuda-tests 90 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_steps.py tests/test_distill.py \
    tests/test_recipes_train.py -k "cuda" || true
  tail -n 3 "$LOGS/cuda-tests.log" | tee -a "$OUT/summary.txt"
  echo "gpu-check: done in $SECONDS s; results in $OUT ($(ls "$OUT" | tr '\n' ' '))" | tee -a "$OUT/summary.txt"
}

case "${1:-}" in
  prepare) prepare ;;
  install) install ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/gpu-check.sh prepare | install | run [OUT]" >&2; exit 2 ;;
esac
