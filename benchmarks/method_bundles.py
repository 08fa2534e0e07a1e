"""One device bundle per deployment form, converted from one trained model per method.

The device and storage benchmarks compare the forms a user would deploy (docs/bundle-format.md):

    spartan         split: shared backbone.tflite + a small task file (and --fused: one graph)
    adapters        whole: the model with its adapters, one graph
    lora-merged     whole: a plain BERT graph with the updates folded into the kernels
    lora-unmerged   whole: the low-rank matmuls kept in the graph
    full            whole: the fine-tuned model, one graph

``models_dir`` holds one trained task per method, in folders named after the method (what
``benchmarks/bench_training.py --models-dir`` writes). Each bundle is converted by
``convert/to_tflite.py`` (int8, the default) into ``bundles_dir/<form>`` unless it is already there.
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMS = {  # bundle folder -> (method folder, extra converter flags)
    "spartan": ("spartan", ["--fused"]),
    "adapters": ("adapters", []),
    "lora-merged": ("lora", []),
    "lora-unmerged": ("lora", ["--lora-unmerged"]),
    "full": ("full", []),
}


def ensure_bundles(models_dir, bundles_dir, check_samples: int = 200) -> dict:
    """{form: bundle dir}, converting the missing ones; exits with a message if a model they need is
    missing. Bundles already there need no models (e.g. bundles copied to a Raspberry Pi)."""
    models_dir, bundles_dir = Path(models_dir), Path(bundles_dir)
    to_convert = [form for form in FORMS if not (bundles_dir / form / "manifest.json").is_file()]
    missing = sorted({FORMS[form][0] for form in to_convert if not (models_dir / FORMS[form][0] / "config.json").is_file()})
    if missing:
        sys.exit(f"error: --models-dir {models_dir}: no trained model for {', '.join(missing)} (expected "
                 f"{models_dir}/<method>/config.json, as benchmarks/bench_training.py --models-dir writes)")
    bundles = {}
    for form, (method, flags) in FORMS.items():
        out = bundles_dir / form
        if not (out / "manifest.json").is_file():
            print(f"converting {models_dir / method} -> {out} ...", file=sys.stderr, flush=True)
            command = [sys.executable, str(REPO / "convert" / "to_tflite.py"), "--model-dir", str(models_dir / method),
                       "--output-dir", str(out), "--check-samples", str(check_samples), *flags]
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            bundles_dir.mkdir(parents=True, exist_ok=True)
            (bundles_dir / f"{form}.convert.log").write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
            if done.returncode != 0:
                sys.exit(f"error: converting {form} failed: {done.stderr.strip().splitlines()[-1]}")
        bundles[form] = out
    return bundles
