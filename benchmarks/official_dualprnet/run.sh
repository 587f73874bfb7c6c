#!/usr/bin/env bash
# The official Dual-PRNet code on a dataset this suite prepared, on a CPU, outside the suite: the
# "official code" arms of the real-brain diagnosis (README, "Real brains on a CPU").
#
#   benchmarks/official_dualprnet/run.sh MIRROR DATA OUT STEPS [identity]
#
# MIRROR: a clone of https://github.com/kangmiao15/Dual-Stream-PRNet-Plus (its code is not part of
# this repository); DATA: a prepared dataset (data/mindboggle101 of config/mindboggle_cpu.yaml's
# run); OUT: a new folder, which receives the patched checkout and validation.csv (every 100
# steps); STEPS: optimizer steps. The checkout is the commit the patches were written against,
# with cpu.patch (the MICCAI 2019 widths, the device a parameter, no CUDA-only imports or
# loaders); with `identity`, identity.patch too (align_corners=True wherever the network samples,
# so that an untrained network is near the identity: a diagnostic arm, not the official code).
set -euo pipefail
if [ $# -lt 4 ] || [ $# -gt 5 ] || { [ $# -eq 5 ] && [ "$5" != identity ]; }; then
    echo "usage: $0 MIRROR DATA OUT STEPS [identity]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mirror=$1 data=$2 out=$3 steps=$4 variant=${5:-}
commit=0a252646f0282646c15f827b19522aaef79a44f8
if [ -e "$out" ]; then
    echo "$out: exists; give a new folder" >&2
    exit 2
fi
mkdir -p "$out"
git clone --quiet "$mirror" "$out/official"
git -C "$out/official" checkout --quiet "$commit"
git -C "$out/official" apply "$here/cpu.patch"
flags=()
if [ "$variant" = identity ]; then
    git -C "$out/official" apply "$here/identity.patch"
    flags+=(--align-corners)
fi
python "$here/train_official.py" --official "$out/official" --data "$data" --out "$out" \
    --steps "$steps" "${flags[@]}"
