#!/usr/bin/env bash
# make demo: the shipped sample (tests/data/chr20sim) through the master on the embedded default
# (SQLite + the local runner): index, split, align, call, gather; ends with the run's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo-out}
D=tests/data/chr20sim
mkdir -p "$OUT"
export GENEFARM_HOME=${GENEFARM_HOME:-$PWD/$OUT/genefarm-home}
echo "== genefarm demo: the shipped sample through the master (index, split, align, call, gather) on the local backend" >&2
exec genefarm run "$D/tiny_R1.fastq.gz" "$D/tiny_R2.fastq.gz" --reference "$D/ref.fa.gz" --name tiny \
  --regions 8 --chunk-pairs 5000 --output "$PWD/$OUT" --resubmit
