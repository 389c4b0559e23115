#!/usr/bin/env bash
# The GPU benchmarks as one command, for one H200 (H100) lent through the project's device tool:
# the IResNet-50 trunk at 112x112 in bf16 (images/s, fraction of the bf16 GEMM peak) and the DCR
# trunk's benchmark (benchmarks/bench_gpu.py), bounded to --budget seconds (default 480) so that
# the whole call fits the session's 15 minutes of device time.
#
#   bash benchmarks/gpu_wheels.sh        # here, once: the missing packages as wheels in .whl/ (ignored)
#   device run: command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=540
#   bash benchmarks/gpu.sh --cpu         # the same steps at tiny sizes on this CPU (tests/test_benchmarks.py)
#
# Options: --cpu; --budget SECONDS; --out DIR (default $OUT, the folder the device tool brings
# back, else a new temporary folder); --only STEP[,STEP] (a rerun of some steps: facts,
# iresnet_b256, iresnet_b1024, bench_gpu; the wheels are installed every time).
# Each step's output goes to DIR/STEP.txt (and the terminal); DIR/summary.txt lists every step
# with its exit status and seconds. A failing step does not stop the next one; a step that would
# outrun the budget is interrupted (SIGINT: bench_gpu.py then prints the rows it has).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false

cpu=false budget="" out="${OUT:-}" only=""
while (($#)); do
  case "$1" in
    --cpu) cpu=true ;;
    --budget) budget="$2"; shift ;;
    --out) out="$2"; shift ;;
    --only) only=",$2," ; shift ;;
    *) echo "gpu.sh: unknown option '$1' (expected --cpu, --budget SECONDS, --out DIR, --only STEP[,STEP])" >&2; exit 2 ;;
  esac
  shift
done
# The CPU form is a check that the steps run (a loaded 2-core machine, bf16 emulated): a longer bound.
budget="${budget:-$($cpu && echo 1500 || echo 480)}"
out="${out:-$(mktemp -d)}"
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"
deadline=$((SECONDS + budget))

if $cpu; then
  device=cpu
  iresnet_size=(--tiny --threads 2)
  bench_gpu_options=(--device cpu --steps 2 --warmup 1 --tiny --compile false --skip metrics)
else
  device=cuda
  iresnet_size=(--repeats 20 --threads 16)
  # bench_gpu.py's own figures are bests of 10 steps after 3 warm-ups (compilation included);
  # a 100-step train_hf.py run (not 200) keeps the whole script inside the budget.
  bench_gpu_options=(--device cuda --steps 10 --warmup 3 --workers 16 --run-steps 100)
fi

# step NAME SECONDS COMMAND...: runs COMMAND (a program, or a function exported below), output to the terminal and $out/NAME.txt, under
# min(SECONDS, what is left of the budget less 5 s), and records its status in the summary.
step() {
  local name="$1" limit="$2" started=$SECONDS status
  shift 2
  # The wheels always: a rerun may find a fresh machine.
  if [[ -n "$only" && "$name" != wheels && "$only" != *",$name,"* ]]; then
    return
  fi
  local left=$((deadline - SECONDS - 5))
  ((limit > left)) && limit=$left
  if ((limit <= 0)); then
    printf '%-14s %4s %5s s  %s\n' "$name" 124 0 "not started: the budget was spent" | tee -a "$summary"
    return
  fi
  echo "=== $name (at most ${limit} s): $*"
  if declare -F "$1" >/dev/null; then
    set -- bash -c "$1"  # timeout runs programs: a function runs in a bash that inherits it (export -f)
  fi
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  status=$?
  printf '%-14s %4s %5s s  %s\n' "$name" "$status" $((SECONDS - started)) "$name.txt" | tee -a "$summary"
}

# The carried wheels (datasets, evaluate, kornia, ...: what the GPU image lacks) into /tmp/site;
# dcr_hf itself comes from this working tree, not installed.
install_wheels() {
  if $cpu; then
    echo "no wheels to install: --cpu uses the local environment"
    return 0
  fi
  if ! compgen -G ".whl/*.whl" >/dev/null; then
    # The next steps still run (an image that has the packages needs no wheels); facts names what is missing.
    echo "no .whl/*.whl here: run 'bash benchmarks/gpu_wheels.sh' on the development machine and carry .whl"
    return 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && ls .whl
}
export cpu
export -f install_wheels
step wheels 120 install_wheels
[[ -d /tmp/site ]] && ! $cpu && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

facts() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,power.limit,driver_version --format=csv
  else
    echo "no nvidia-smi here"
  fi
  python3 - <<'EOF'
import importlib.metadata as metadata
import os
import platform

import torch

import dcr_hf

print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version()}), {os.cpu_count()} CPUs, dcr_hf from {os.path.dirname(dcr_hf.__file__)}")
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(0)
    print(f"{properties.name}: compute capability {properties.major}.{properties.minor}, "
          f"{properties.multi_processor_count} SMs, {properties.total_memory / 2**30:.1f} GiB, "
          f"bf16 supported: {torch.cuda.is_bf16_supported()}")
names = ["transformers", "accelerate", "datasets", "evaluate", "huggingface_hub", "safetensors", "kornia", "kornia_rs",
         "pytorch-metric-learning", "faiss-cpu", "pyarrow", "fsspec", "dill", "multiprocess", "pandas", "numpy",
         "scipy", "pillow", "triton"]
versions = []
for name in names:
    try:
        versions.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        versions.append(f"{name} MISSING")
print(", ".join(versions))
# What the benchmarks import, checked before they start (one line per failure).
for module in ("datasets", "evaluate", "kornia", "pytorch_metric_learning", "dcr_hf.training", "dcr_hf.metrics"):
    __import__(module)
print("imports: ok")
EOF
}
export -f facts
step facts 90 facts

step iresnet_b256 150 python3 benchmarks/bench_iresnet.py --architecture r50 --batch 256 --bf16 --device "$device" "${iresnet_size[@]}"
step iresnet_b1024 150 python3 benchmarks/bench_iresnet.py --architecture r50 --batch 1024 --bf16 --device "$device" "${iresnet_size[@]}"
# The rest of the budget.
step bench_gpu "$budget" python3 benchmarks/bench_gpu.py "${bench_gpu_options[@]}"

echo "=== summary ($out/summary.txt; step, exit status, seconds, file)"
cat "$summary"
