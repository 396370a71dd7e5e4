#!/usr/bin/env bash
# The wheels the GPU scripts need beyond the device image (torch, transformers, peft): torchao and bitsandbytes, for
# CPython 3.12 on x86-64 Linux, downloaded here into a folder that travels with the working tree (default .whl; ignore
# it in git: echo /.whl/ >> .git/info/exclude). benchmarks/gpu_all.sh installs from it when it is there.
#   bash benchmarks/gpu_wheels.sh [FOLDER]
set -euo pipefail
folder="${1:-.whl}"
mkdir -p "$folder"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$folder" "torchao==0.18.0" "bitsandbytes==0.50.2"
ls -l "$folder"
