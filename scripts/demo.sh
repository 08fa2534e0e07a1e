#!/usr/bin/env bash
# The main job end to end on embedded defaults: the shipped backbone (all-MiniLM-L6-v2 from PyPI)
# and the QNLI sample shipped in samples/glue. Creates or updates .venv first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_venv.sh
py=.venv/bin/python
out=models/demo-qnli
echo "== train SPARTAN memories on the shipped QNLI sample (320 rows, 3 epochs) -> $out"
"$py" -m spartan_tf.train --task qnli --data-dir samples/glue --output-dir "$out" --overwrite
echo "== evaluate $out"
"$py" -m spartan_tf.evaluate --model-dir "$out"
