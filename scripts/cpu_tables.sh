#!/usr/bin/env bash
# Regenerates every CPU results table in docs/ and the README from the runs' workdirs
# (whatever runs exist; missing and unfinished ones are listed under each table).
# Usage: bash scripts/cpu_tables.sh   (from the repository root; runs in runs/<table>/)
set -euo pipefail
# table (experiments/runs/<table>.sh) : the doc it is written into
for entry in fashion_mnist_15min:fashion_mnist fashion_mnist:fashion_mnist \
    fashion_mnist_family:fashion_mnist_family digits:digits; do
  table=${entry%%:*}
  doc="docs/${entry#*:}.md"
  python -m fixmatch_jax.summarize --script="experiments/runs/${table}.sh" --metric=accuracy \
    --view=both --write "${doc}"
  python -m fixmatch_jax.summarize --script="experiments/runs/${table}.sh" --metric=accuracy \
    --view=by_algorithm --write README.md
done
