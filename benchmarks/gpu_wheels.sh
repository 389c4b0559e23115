#!/usr/bin/env bash
# The Python packages dcr-hf needs that the device tool's GPU image lacks (its list:
# /work/.library/device/KINDS.md), as CPython 3.12 manylinux x86-64 wheels in .whl/, for
# `benchmarks/gpu.sh` to install there (nothing can be downloaded on that machine). Run here, in
# the repository's root, where pip reaches PyPI:
#
#   bash benchmarks/gpu_wheels.sh
#   device run: command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=540
#
# The wheels are never committed: .gitignore ignores /.whl/, and where a checkout does not (an
# older branch), this script adds /.whl/ to .git/info/exclude, as the device tool's notes say.
# The versions are the ones this project's tests pass with, within pyproject.toml's bounds, and
# fit the image's own packages (torch 2.11, transformers 5.17, huggingface_hub 1.33, numpy 2.5):
# datasets 5.2 needs huggingface_hub >= 1.31 and pyarrow >= 24 (the image's pyarrow is used: its
# wheel alone is 55 MB, over what a call carries beside the rest; gpu.sh prints its version).
# faiss: faiss-gpu has no wheel of a size that travels (hundreds of MB); the metrics search with
# ExactKNN's torch path on the GPU, which needs no faiss, and the faiss-cpu wheel (19 MB) comes
# along for the code that asks for faiss by name (dcr_hf.index, NMI/AMI k-means).
# tests/test_benchmarks.py checks that this list covers every runtime dependency of
# pyproject.toml the image lacks, and what those need in turn.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  datasets==5.2.0
  dill==0.4.1
  multiprocess==0.70.19
  evaluate==0.4.6
  kornia==0.9.0
  kornia_rs==0.2.0
  pytorch-metric-learning==2.9.0
  faiss-cpu==1.15.1
)
# What one call carries: the working tree and these together at most 64 MiB; stop well before.
LIMIT_MIB=48

if ! git check-ignore -q .whl/x.whl; then
  exclude="$(git rev-parse --git-path info/exclude)"
  mkdir -p "$(dirname "$exclude")"
  echo '/.whl/' >>"$exclude"
fi

rm -rf .whl
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PACKAGES[@]}"

ls -l .whl
wheels=$(du -sk .whl | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "wheels: $((wheels / 1024)) MiB; with the working tree that travels: $(((wheels + tree) / 1024)) MiB (limit 64 MiB)"
if (((wheels + tree) / 1024 > LIMIT_MIB)); then
  echo "gpu_wheels.sh: more than ${LIMIT_MIB} MiB would travel; carry fewer wheels" >&2
  exit 1
fi
