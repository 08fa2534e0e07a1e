"""Device bundles, one per deployment form, converted from one trained model per method.

The device and storage benchmarks compare the forms a user would deploy (docs/bundle-format.md):

    spartan          shared: SPARTAN's task tensors on the shared SPARTAN graph
    spartan-whole    whole: SPARTAN fused into one graph (convert --whole)
    spartan-2tasks   shared: two SPARTAN tasks (qnli and sst2) on one shared graph
    spartan-two-sites shared: SPARTAN with two memories a layer (--memory-site attention+feed-forward)
    spartan-tuned-norms shared: SPARTAN with its LayerNorms tuned per task (--tune-layer-norms)
    adapters         shared: the adapters' tensors on the shared adapters graph
    adapters-whole   whole: the model with its adapters, one graph (convert --whole)
    lora-unmerged    shared: the low-rank matrices on the shared LoRA graph (--lora-unmerged)
    lora-merged      whole: a plain BERT graph with the updates folded into the kernels
    fixed-128        whole: lora-merged exported with a fixed [1, 128] input (no dynamic shapes),
                     what MediaPipe-style exports run; its texts must be padded to 128
    full             whole: the fine-tuned model, one graph

``models_dir`` holds one trained task per method, in folders named after the method (what
``benchmarks/bench_training.py --models-dir`` writes), and for spartan-2tasks a SPARTAN sst2 model
in ``spartan-sst2``, and for spartan-two-sites a SPARTAN qnli model trained with
``--memory-site attention+feed-forward`` in ``spartan-two-sites``, and for spartan-tuned-norms one
trained with ``--tune-layer-norms`` in ``spartan-tuned-norms``. Each bundle is converted by
``convert/to_tflite.py`` (int8, the default) into ``bundles_dir/<form>`` unless it is already there.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXED_LENGTH = 128
FORMS = {  # bundle folder -> (method folders, extra converter flags)
    "spartan": (["spartan"], []),
    "spartan-whole": (["spartan"], ["--whole"]),
    "spartan-2tasks": (["spartan", "spartan-sst2"], []),
    "spartan-two-sites": (["spartan-two-sites"], []),
    "spartan-tuned-norms": (["spartan-tuned-norms"], []),
    "adapters": (["adapters"], []),
    "adapters-whole": (["adapters"], ["--whole"]),
    "lora-unmerged": (["lora"], ["--lora-unmerged"]),
    "lora-merged": (["lora"], []),
    "fixed-128": (["lora"], []),
    "full": (["full"], []),
}


def ensure_bundles(models_dir, bundles_dir, forms=None, check_samples: int = 200) -> dict:
    """{form: bundle dir} for ``forms`` (default: all), converting the missing ones; exits with a
    message if a model they need is missing. Bundles already there need no models (e.g. bundles
    copied to a Raspberry Pi)."""
    models_dir, bundles_dir = Path(models_dir), Path(bundles_dir)
    forms = list(forms or FORMS)
    to_convert = [form for form in forms if not (bundles_dir / form / "manifest.json").is_file()]
    missing = sorted({method for form in to_convert for method in FORMS[form][0]
                      if not (models_dir / method / "config.json").is_file()})
    if missing:
        sys.exit(f"error: --models-dir {models_dir}: no trained model for {', '.join(missing)} (expected "
                 f"{models_dir}/<method>/config.json, as benchmarks/bench_training.py --models-dir writes)")
    bundles = {}
    for form in forms:
        methods, flags = FORMS[form]
        out = bundles_dir / form
        if not (out / "manifest.json").is_file():
            print(f"converting {', '.join(methods)} -> {out} ...", file=sys.stderr, flush=True)
            command = [sys.executable, str(REPO / "convert" / "to_tflite.py"), "--output-dir", str(out),
                       "--check-samples", str(check_samples), *flags]
            for method in methods:
                command += ["--model-dir", str(models_dir / method)]
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            bundles_dir.mkdir(parents=True, exist_ok=True)
            (bundles_dir / f"{form}.convert.log").write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
            if done.returncode != 0:
                sys.exit(f"error: converting {form} failed: {done.stderr.strip().splitlines()[-1]}")
            if form == "fixed-128":
                make_fixed_length(out, models_dir / methods[0])
        bundles[form] = out
    return bundles


def make_fixed_length(bundle: Path, model_dir: Path, length: int = FIXED_LENGTH):
    """Replace the bundle's one whole task file by the same model exported with a fixed [1, length]
    input (export.whole_signatures' ``length``), and its manifest entry's sha256 and bytes to match."""
    import hashlib

    sys.path.insert(0, str(REPO))
    from spartan_tf import artifacts, export

    model = artifacts.load_trained(model_dir)[0]
    manifest = json.loads((bundle / "manifest.json").read_text())
    (entry,) = manifest["tasks"].values()
    data = export.to_tflite(export.whole_signatures(model, length, length=length), "int8")
    (bundle / entry["file"]).write_bytes(data)
    entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), fixed_length=length)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
