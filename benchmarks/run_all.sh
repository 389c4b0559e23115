#!/usr/bin/env bash
# Every CPU benchmark, one after the other, each printing its summary table (about 8 minutes on
# 2 cores). Run on a quiet machine: the figures are best-of-N, but other work still slows them.
#   bash benchmarks/run_all.sh [--quick]      # --quick: fewer repeats, no torch.compile variants
# The GPU run is separate: bash benchmarks/gpu.sh (one H200 through the device tool, 8 minutes); so is
# python benchmarks/bench_index.py (a 10^6-face gallery, long builds).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
quick=false
[[ "${1:-}" == "--quick" ]] && quick=true
lscpu | grep -E "^Model name|^CPU\(s\)" || true
python benchmarks/bench_metrics.py
# The original's metric code side by side, when its venv and repository are here.
if [[ -x /work/orig-venv/bin/python && -d /work/.mirror/gyfastas+CS7319E1G16/repo ]]; then
  python benchmarks/bench_vs_original_metrics.py
fi
python benchmarks/bench_low_resolution.py
python benchmarks/bench_data.py
python benchmarks/bench_recordio.py
if $quick; then
  python benchmarks/bench_model.py
  python benchmarks/bench_train.py
else
  python benchmarks/bench_model.py --compile
  python benchmarks/bench_train.py
  python benchmarks/bench_train.py -- --torch_compile true
  python benchmarks/bench_train.py --stages trunk -- --bf16 true
fi
