"""``--benchmark``: latency percentiles, throughput and peak memory of a bundle on this machine.

Each timed batch includes tokenization, padding and inference, in input order (as requests
would arrive); a few warm-up batches run first and are not timed.
"""

from __future__ import annotations

import itertools
import os
import platform
import sys
import time

import numpy as np

from spartan_device.engine import Engine, pad
from spartan_device.errors import DeviceError
from spartan_device.inputs import Record


def reference_records(engine: Engine, task: str, count: int) -> list[Record]:
    """``count`` records cycling through the task's reference_inputs from the manifest."""
    refs = [r for r in engine.bundle.task(task).reference_inputs
            if isinstance(r, dict) and isinstance(r.get("text"), str) and r["text"].strip()]
    if not refs:
        raise DeviceError(f"task {task}: the manifest has no reference_inputs; pass --input FILE to benchmark")
    return [Record(i + 1, i + 1, task, r["text"], r.get("text_pair"))
            for i, r in zip(range(count), itertools.cycle(refs))]


def benchmark(engine: Engine, records: list[Record], batch_size: int, warmup: int = 3,
              seq_length: int | None = None) -> dict:
    """Run ``records`` in batches of ``batch_size`` and measure; returns the figures as a dict.
    ``seq_length``: every input truncated to at most, and padded (attention mask 0) to exactly, that
    many tokens: the cost of a fixed sequence length, whatever the texts' own lengths."""
    if not records:
        raise DeviceError("nothing to benchmark: no valid input lines")
    load_start = time.perf_counter()
    infos = {name: engine.bundle.task(name) for name in dict.fromkeys(r.task for r in records)}
    tasks, task_load_ms, rss_after_load = {}, {}, {}
    for name in infos:  # one at a time: what each task's load costs in time and resident memory
        start = time.perf_counter()
        tasks[name] = engine.task(name)
        task_load_ms[name] = round(1000.0 * (time.perf_counter() - start), 1)
        rss_after_load[name] = current_rss_mb()
    load_s = time.perf_counter() - load_start
    max_length = {name: info.max_length for name, info in infos.items()}
    for name, length in max_length.items():
        if seq_length is not None and seq_length > length:
            raise DeviceError(f"--seq-length {seq_length}: task {name} takes at most {length} tokens (its max_length)")
    ran = list(infos.values())
    batches = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]

    def run(batch):
        name = batch[0].task
        if any(r.task != name for r in batch):  # mixed tasks: one call per task, as the client does
            return sum((run([r for r in batch if r.task == t]) for t in dict.fromkeys(r.task for r in batch)), 0)
        encodings = engine.tokenization.encode([(r.text, r.text_pair) for r in batch], seq_length or max_length[name])
        padded = pad(encodings, seq_length)
        engine.logits(tasks[name], padded)
        return padded.num_tokens

    for batch in itertools.islice(itertools.cycle(batches), warmup):
        run(batch)
    latencies, tokens = [], 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for batch in batches:
        t0 = time.perf_counter()
        tokens += run(batch)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    total_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    lat = np.asarray(latencies)
    return {
        "tasks": list(max_length),
        "deployment": _common(info.deployment for info in ran),  # shared or whole (mixed: several tasks differ)
        "method": _common(info.method_name for info in ran),
        "lora_merged": _common(info.lora_merged for info in ran),
        "runtime": str(engine.runtime),
        "threads": engine.threads,
        "batch_size": batch_size,
        "seq_length": seq_length,  # None: each batch at its longest text's length
        "texts": len(records),
        "mean_tokens": round(tokens / len(records), 1),
        "latency_ms": {"p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99),
                       "mean": round(float(lat.mean()), 3)},
        "texts_per_s": round(len(records) / total_s, 1),
        "total_s": round(total_s, 3),
        # CPU time of this process per text (all threads): steadier than wall time on a shared machine
        "cpu_ms_per_text": round(1000.0 * cpu_s / len(records), 3),
        "task_load_s": round(load_s, 3),  # every task, with its graph (the first) and a warm-up call each
        "task_load_ms": task_load_ms,  # per task, in load order
        "rss_after_load_mb": rss_after_load,  # resident memory right after each task's load
        "peak_rss_mb": peak_rss_mb(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.system()}",
        "python": platform.python_version(),
    }


def format_report(figures: dict) -> str:
    lat = figures["latency_ms"]
    threads = figures["threads"] if figures["threads"] is not None else "default"
    memory = "n/a" if figures["peak_rss_mb"] is None else f"{figures['peak_rss_mb']:.1f} MB (max RSS)"
    deployed = f" {figures['deployment']} {figures['method'] or '?'}" if figures["deployment"] else ""
    padded = f", padded to {figures['seq_length']}" if figures["seq_length"] else ""
    return "\n".join([
        f"benchmark: {figures['texts']} texts (task {', '.join(figures['tasks'])}{deployed}, mean "
        f"{figures['mean_tokens']} tokens{padded}), {figures['runtime']}, {threads} thread(s), "
        f"batch {figures['batch_size']}",
        f"machine:   {figures['machine']}, Python {figures['python']}",
        f"latency per batch: p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  p99 {lat['p99']:.2f} ms "
        f"(mean {lat['mean']:.2f} ms)",
        f"throughput: {figures['texts_per_s']:.1f} texts/s",
        f"peak memory: {memory}",
        "task loads:  " + ", ".join(f"{name} {ms:.1f} ms (then {figures['rss_after_load_mb'][name]} MB resident)"
                                    for name, ms in figures["task_load_ms"].items()),
    ])


def _status_mb(field: str) -> float | None:
    """``field`` (e.g. "VmHWM") of /proc/self/status, in MB; None where /proc is unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process, in MB; None where unavailable. Linux: VmHWM of
    /proc/self/status, which starts afresh with the program. getrusage's ru_maxrss (the fallback)
    keeps the peak of a parent that forked it, so a client started by a large process reported
    the parent's memory."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KB on Linux


def current_rss_mb() -> float | None:
    """Resident memory of this process now (VmRSS), in MB; None where /proc is unavailable."""
    return _status_mb("VmRSS")


def _common(values):
    """The one value of ``values``, None if there is none, "mixed" if they differ."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else None if not distinct else "mixed"


def _pct(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 3)
