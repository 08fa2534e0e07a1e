"""The report of ``python -m spartan_tf.analyze``: markdown, JSON, raw weights (.npz) and PNG figures.

Every file is rendered in memory and written atomically. Figures use matplotlib's Agg backend.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from spartan_tf.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_npz
from spartan_tf.specialisation import lift

REPORT_MD, REPORT_JSON, WEIGHTS_NPZ = "report.md", "report.json", "parent_weights.npz"
FIGURES = {
    "heatmap": "heatmap.png",
    "lift": "heatmap_lift.png",
    "usage": "usage.png",
    "specialisation": "specialisation.png",
    "compare": "compare.png",
}


# --------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def _grid(num_layers: int, width: float, height: float):
    plt = _pyplot()
    columns = 2 if num_layers > 1 else 1
    rows = int(np.ceil(num_layers / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for extra in axes.flat[num_layers:]:
        extra.set_visible(False)
    return figure, axes.flat


def _footer(figure, report: dict):
    figure.text(0.0, -0.01, f"{report['command']}\n{report['machine']}", fontsize=7, va="top", family="monospace")


def heatmap_figure(report: dict, relative: bool) -> bytes:
    """Per layer, labels x parents: the mean parent weight, or (relative) its log2 lift over all inputs."""
    layers, labels = report["layers"], report["label_names"]
    absent = np.array([report["label_counts"][name] == 0 for name in labels])
    figure, axes = _grid(len(layers), 6.5, 0.45 * len(labels) + 1.6)
    for ax, layer in zip(axes, layers):
        heat = np.asarray(layer["heatmap"])
        if relative:
            values = lift(heat, layer["usage"])
            values[absent] = 0.0  # a label without inputs has no preferences
            bound = min(max(float(np.abs(values).max()), 0.1), 4.0)  # beyond 16x either way: saturated
            image = ax.imshow(np.clip(values, -bound, bound), cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        else:
            image = ax.imshow(heat, cmap="viridis", vmin=0, aspect="auto")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xticks(range(heat.shape[1]), range(heat.shape[1]), fontsize=7)
        ax.set_xlabel("parent", fontsize=8)
        ax.set_title(f"layer {layer['layer']}: NMI {layer['nmi_argmax']:.3f} "
                     f"(shuffled {layer['nmi_argmax_shuffled_mean']:.3f})", fontsize=9)
        figure.colorbar(image, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=7)
    what = "log2(mean weight given the label / mean weight over all inputs)" if relative else "mean parent weight"
    figure.suptitle(f"{report['model_name']}: {what}, by label ({report['examples']} inputs)", fontsize=10)
    figure.tight_layout()
    _footer(figure, report)
    return _png(figure)


def usage_figure(report: dict) -> bytes:
    """Per layer: fraction of tokens whose top-k holds each parent; the uniform rate k/E dashed."""
    layers, method = report["layers"], report["method"]
    figure, axes = _grid(len(layers), 6.0, 2.4)
    uniform = method["top_k"] / method["num_parents"]
    for ax, layer in zip(axes, layers):
        rate = np.asarray(layer["topk_rate"])
        colours = ["tab:red" if e in layer["dead_parents"] or e in layer["rare_parents"] else "tab:blue"
                   for e in range(len(rate))]
        ax.bar(range(len(rate)), rate, color=colours)
        ax.axhline(uniform, color="grey", linestyle="--", linewidth=1)
        ax.set_ylim(0, 1.0)
        ax.set_xticks(range(len(rate)), range(len(rate)), fontsize=7)
        ax.set_xlabel("parent", fontsize=8)
        ax.set_ylabel("in top-k", fontsize=8)
        ax.set_title(f"layer {layer['layer']}: usage entropy {layer['usage_entropy']:.3f}, "
                     f"{layer['effective_parents']:.1f} effective, {len(layer['dead_parents'])} dead", fontsize=9)
    figure.suptitle(f"{report['model_name']}: how often each parent is in a token's top-{method['top_k']} "
                    f"(dashed: uniform {uniform:.2f}; red: dead or rare)", fontsize=10)
    figure.tight_layout()
    _footer(figure, report)
    return _png(figure)


def specialisation_figure(report: dict) -> bytes:
    """Per layer: NMI(label; argmax parent) and NMI(label; top-k membership) beside shuffled labels."""
    plt = _pyplot()
    layers = report["layers"]
    x = np.arange(len(layers))
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    untrained = (report.get("untrained") or {}).get("layers")
    width = 0.27 if untrained else 0.4
    for ax, name, title in [(axes[0], "nmi_argmax", "argmax parent"), (axes[1], "nmi_topk", "top-k membership")]:
        ax.bar(x - width / 2 - (width / 2 if untrained else 0), [layer[name] for layer in layers], width,
               label="trained, labels")
        if untrained:
            ax.bar(x, [layer[name] for layer in untrained], width, color="tab:orange",
                   label=f"untrained (initial weights, seed {report['untrained']['seed']}), labels")
        ax.bar(x + width / 2 + (width / 2 if untrained else 0), [layer[f"{name}_shuffled_mean"] for layer in layers],
               width, yerr=[layer[f"{name}_shuffled_std"] for layer in layers], color="grey",
               label="trained, shuffled labels")
        ax.set_xticks(x, [str(layer["layer"]) for layer in layers])
        ax.set_xlabel("layer")
        ax.set_ylabel("NMI")
        ax.set_title(f"NMI(label; {title})", fontsize=10)
        ax.legend(fontsize=8)
    figure.suptitle(f"{report['model_name']}: specialisation per layer ({report['shuffles']} shuffles)", fontsize=10)
    figure.tight_layout()
    _footer(figure, report)
    return _png(figure)


def compare_figure(reports: list[dict]) -> bytes:
    """Usage entropy and NMI(label; argmax parent) per layer, one line per model."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.4))
    for report in reports:
        layers = [layer["layer"] for layer in report["layers"]]
        name = f"{report['model_name']} (balance {report['method'].get('balance_loss_scale', 0)})"
        axes[0].plot(layers, [layer["usage_entropy"] for layer in report["layers"]], marker="o", label=name)
        axes[1].plot(layers, [len(layer["dead_parents"]) + len(layer["rare_parents"]) for layer in report["layers"]],
                     marker="o", label=name)
        axes[2].plot(layers, [layer["nmi_argmax"] for layer in report["layers"]], marker="o", label=name)
        axes[2].plot(layers, [layer["nmi_argmax_shuffled_mean"] for layer in report["layers"]],
                     linestyle=":", color=axes[2].lines[-1].get_color())
    axes[0].set_ylim(0, 1.02)
    for ax, title in zip(axes, ["usage entropy (1 = uniform)", "dead + rare parents",
                                "NMI(label; argmax parent), dotted: shuffled"]):
        ax.set_xlabel("layer")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    figure.tight_layout()
    _footer(figure, reports[0])
    return _png(figure)


# --------------------------------------------------------------------------- markdown


def _fmt_metrics(metrics: dict) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())


def layer_table(report: dict) -> list[str]:
    method = report["method"]
    lines = [
        f"| layer | usage entropy | effective parents (of {method['num_parents']}) | dead / rare | "
        "NMI argmax | shuffled (mean ± sd, max) | above every shuffle | NMI top-k | shuffled (mean ± sd) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: |",
    ]
    for layer in report["layers"]:
        above = "yes" if layer["nmi_argmax"] > layer["nmi_argmax_shuffled_max"] else "no"
        lines.append(
            f"| {layer['layer']} | {layer['usage_entropy']:.3f} | {layer['effective_parents']:.1f} | "
            f"{len(layer['dead_parents'])} / {len(layer['rare_parents'])} | {layer['nmi_argmax']:.3f} | "
            f"{layer['nmi_argmax_shuffled_mean']:.3f} ± {layer['nmi_argmax_shuffled_std']:.3f}, "
            f"{layer['nmi_argmax_shuffled_max']:.3f} | {above} | {layer['nmi_topk']:.3f} | "
            f"{layer['nmi_topk_shuffled_mean']:.3f} ± {layer['nmi_topk_shuffled_std']:.3f} |"
        )
    return lines


def preference_table(report: dict) -> list[str]:
    """Per label and layer: the parent with the highest lift, and that lift as a ratio."""
    layers = report["layers"]
    lines = ["| label | " + " | ".join(f"layer {layer['layer']}" for layer in layers) + " |",
             "| --- |" + " ---: |" * len(layers)]
    lifts = [lift(layer["heatmap"], layer["usage"]) for layer in layers]
    for row, label in enumerate(report["label_names"]):
        if report["label_counts"][label] == 0:
            lines.append(f"| {label} | " + " | ".join(["(no inputs)"] * len(layers)) + " |")
            continue
        cells = []
        for values in lifts:
            parent = int(np.argmax(values[row]))
            cells.append(f"p{parent} ×{2 ** values[row, parent]:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def argmax_table(report: dict) -> list[str]:
    """Per layer: how many inputs have each parent as their heaviest (only parents that win any)."""
    lines = []
    for layer in report["layers"]:
        counts = layer["argmax_counts"]
        winners = ", ".join(f"p{e}: {n}" for e, n in sorted(enumerate(counts), key=lambda item: -item[1]) if n)
        lines.append(f"- layer {layer['layer']}: {winners}")
    return lines


def markdown(report: dict, compare: dict | None = None) -> str:
    method = report["method"]
    counts = ", ".join(f"{name} {n}" for name, n in report["label_counts"].items())
    lines = [
        f"# Which parents specialise: {report['model_name']}",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']}; analysis took {report['seconds']:.0f} s",
        f"- model: `{report['model_dir']}`, backbone {report['backbone']}, "
        f"{method['num_parents']} parents × {method['children_per_parent']} children, top-{method['top_k']}, "
        f"temperature {method['temperature']}, balance-loss scale {method.get('balance_loss_scale', 0)}",
        f"- data: `{report['data']}` ({report['examples']} inputs: {counts})",
        f"- metrics on this data: {_fmt_metrics(report['metrics'])}",
        "",
        "Parent weights are averaged over each input's real tokens (padding excluded); usage is their mean",
        "over inputs. Usage entropy is H(usage) / log E (1 = all parents used equally). Dead: never in any",
        "token's top-k; rare: in the top-k of fewer than 1% of tokens. NMI argmax: normalised mutual",
        "information between the label and each input's heaviest parent; NMI top-k: between the label and",
        "membership of a parent in the input's k heaviest, averaged over parents. Shuffled: the same with",
        f"the labels permuted ({report['shuffles']} seeded permutations, seed {report['seed']}), the chance",
        "level for this many inputs.",
        "",
        "## Per layer",
        "",
        *layer_table(report),
        "",
        "## The parent each label prefers most (ratio of its mean weight to the parent's mean over all inputs)",
        "",
        *preference_table(report),
        "",
        "## Heaviest parent per input (inputs per parent)",
        "",
        *argmax_table(report),
        "",
        "## Figures",
        "",
        f"- [{FIGURES['heatmap']}]({FIGURES['heatmap']}): mean parent weight by label, per layer",
        f"- [{FIGURES['lift']}]({FIGURES['lift']}): the same relative to each parent's overall mean (log2)",
        f"- [{FIGURES['usage']}]({FIGURES['usage']}): how often each parent is in a token's top-k",
        f"- [{FIGURES['specialisation']}]({FIGURES['specialisation']}): NMI per layer against shuffled labels",
    ]
    if report.get("untrained"):
        lines += ["", *untrained_section(report)]
    if compare is not None:
        lines += ["", *comparison_section(report, compare)]
    return "\n".join(lines) + "\n"


def untrained_section(report: dict) -> list[str]:
    """Trained memories against the same memories at their initial weights (the training seed)."""
    lines = [
        f"## Against the untrained memories (initial weights, seed {report['untrained']['seed']})",
        "",
        "The frozen backbone's hidden states already differ between labels (e.g. topics), so even random",
        "parent keys can pick label-dependent parents; the difference is what training changed.",
        "",
        "| layer | usage entropy trained / untrained | NMI argmax trained / untrained (shuffled) | "
        "NMI top-k trained / untrained (shuffled) |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for mine, init in zip(report["layers"], report["untrained"]["layers"]):
        lines.append(
            f"| {mine['layer']} | {mine['usage_entropy']:.3f} / {init['usage_entropy']:.3f} | "
            f"{mine['nmi_argmax']:.3f} / {init['nmi_argmax']:.3f} ({init['nmi_argmax_shuffled_mean']:.3f}) | "
            f"{mine['nmi_topk']:.3f} / {init['nmi_topk']:.3f} ({init['nmi_topk_shuffled_mean']:.3f}) |"
        )
    return lines


def comparison_section(report: dict, other: dict) -> list[str]:
    names = [f"{r['model_name']} (balance {r['method'].get('balance_loss_scale', 0)})" for r in (report, other)]
    lines = [
        f"## Side by side: {names[0]} vs {names[1]}",
        "",
        f"- {names[0]}: {_fmt_metrics(report['metrics'])}",
        f"- {names[1]}: {_fmt_metrics(other['metrics'])} (full report: `{other['output_dir']}/{REPORT_MD}`)",
        "",
        "| layer | usage entropy | effective parents | dead / rare | NMI argmax (shuffled) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for mine, theirs in zip(report["layers"], other["layers"]):
        lines.append(
            f"| {mine['layer']} | {mine['usage_entropy']:.3f} vs {theirs['usage_entropy']:.3f} | "
            f"{mine['effective_parents']:.1f} vs {theirs['effective_parents']:.1f} | "
            f"{len(mine['dead_parents'])}/{len(mine['rare_parents'])} vs "
            f"{len(theirs['dead_parents'])}/{len(theirs['rare_parents'])} | "
            f"{mine['nmi_argmax']:.3f} ({mine['nmi_argmax_shuffled_mean']:.3f}) vs "
            f"{theirs['nmi_argmax']:.3f} ({theirs['nmi_argmax_shuffled_mean']:.3f}) |"
        )
    lines += ["", f"- [{FIGURES['compare']}]({FIGURES['compare']}): usage entropy, dead parents and NMI per layer"]
    return lines


# --------------------------------------------------------------------------- writing


def write_report(out_dir, report: dict, recording, compare: dict | None = None) -> list[Path]:
    """Write report.md, report.json, parent_weights.npz and the figures; returns the paths written.
    A compare.png left by an earlier run with ``--compare`` is removed when there is no comparison."""
    out_dir = Path(out_dir)
    files = {
        REPORT_JSON: None,
        WEIGHTS_NPZ: None,
        FIGURES["heatmap"]: heatmap_figure(report, relative=False),
        FIGURES["lift"]: heatmap_figure(report, relative=True),
        FIGURES["usage"]: usage_figure(report),
        FIGURES["specialisation"]: specialisation_figure(report),
    }
    if compare is not None:
        files[FIGURES["compare"]] = compare_figure([report, compare])
    atomic_write_npz(out_dir / WEIGHTS_NPZ, {
        "weights": recording.weights, "topk": recording.topk, "labels": recording.labels,
        "logits": recording.logits, "label_names": np.array(report["label_names"]),
    })
    for name, content in files.items():
        if content is not None:
            atomic_write_bytes(out_dir / name, content)
    if compare is None:
        (out_dir / FIGURES["compare"]).unlink(missing_ok=True)
    atomic_write_json(out_dir / REPORT_JSON, {**report, "compare": None if compare is None else {
        key: compare[key] for key in ("model_dir", "output_dir", "metrics")}})
    atomic_write_bytes(out_dir / REPORT_MD, markdown(report, compare).encode("utf-8"))
    return [out_dir / name for name in (REPORT_MD, *files)]
