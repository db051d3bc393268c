#!/usr/bin/env bash
# make demo: the shipped sample (tests/data/chr20sim) through index + align, then a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo-out}
D=tests/data/chr20sim
mkdir -p "$OUT"
T=$(nproc)
# The whole pipeline through the master (embedded default: SQLite + the local runner) once the
# kernels it needs are there; until then the stage-2 demo below (index + align).
if python -c 'import importlib.util as u, sys; sys.exit(not (u.find_spec("kernels.split") and u.find_spec("kernels.call")))' \
   && python -m kernels.align --help | grep -q -- --parts; then
  export GENEFARM_HOME=${GENEFARM_HOME:-$PWD/$OUT/genefarm-home}
  echo "== genefarm demo: the shipped sample through the master (index, split, align, call, gather) on the local backend" >&2
  exec genefarm run "$D/tiny_R1.fastq.gz" "$D/tiny_R2.fastq.gz" --reference "$D/ref.fa.gz" --name tiny \
    --regions 8 --chunk-pairs 5000 --output "$PWD/$OUT" --resubmit
fi
echo "== genefarm demo: 20,000 simulated read pairs on 4 Mb of human chr20 (tests/data/chr20sim)" >&2
python -m kernels.index "$D/ref.fa.gz" "$OUT/chr20sim"
python -m kernels.align "$OUT/chr20sim" "$D/tiny_R1.fastq.gz" "$D/tiny_R2.fastq.gz" -o "$OUT/tiny.bam" \
  -t "$T" -R '@RG\tID:tiny\tSM:chr20sim\tPL:ILLUMINA' --json -q > "$OUT/align.json"
python scripts/demo_summary.py "$OUT/align.json" "$OUT/tiny.bam" "$D/tiny.truth.tsv.gz"
