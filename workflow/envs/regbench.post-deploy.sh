#!/usr/bin/env bash
# Run by `snakemake --use-conda` inside the new environment of regbench.yaml: installs the suite
# from the checkout whose Snakefile set REGBENCH_SOURCE (its dependencies are in regbench.yaml).
set -euo pipefail
python -m pip install --no-deps --editable "${REGBENCH_SOURCE:?REGBENCH_SOURCE is set by the Snakefile}"
