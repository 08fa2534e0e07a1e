"""Which graph runs a task: the ``--graph`` choice against the task's deployment (docs/bundle-format.md).

    --graph    split task (SPARTAN)                          whole task (adapters, LoRA, full)
    auto       backbone.tflite chained with its file         its file (signature classify)
    split      the same                                      error: it has no split form
    fused      its <task>.fused.tflite (classify)            its file (a fused graph already)
    backbone   no task: the shared backbone alone, for --benchmark

"split" graphs need backbone.tflite; "classify" graphs are one file each and need nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from spartan_device.bundle import WHOLE, Bundle, FileEntry, TaskInfo
from spartan_device.errors import DeviceError

GRAPHS = ("auto", "split", "fused", "backbone")
CHAINED, CLASSIFY = "split", "classify"  # the two ways to run a task file


@dataclass(frozen=True)
class TaskGraph:
    """How one task runs: ``kind`` CHAINED (backbone embed and layer_i, then the file's memory_i and
    head) or CLASSIFY (the file's one signature); ``entry`` is the file; ``what`` names it in messages."""

    kind: str
    entry: FileEntry
    what: str


def task_graph(info: TaskInfo, graph: str) -> TaskGraph:
    """The graph that runs ``info`` under ``--graph graph``; DeviceError when the task has no such form."""
    if graph not in GRAPHS or graph == "backbone":
        raise DeviceError(f"--graph {graph} runs no task")
    if info.deployment == WHOLE:
        if graph == "split":
            raise DeviceError(f"task {info.name} is deployed whole (method {info.method_name or '?'}): it has no "
                              "split form; use --graph auto or fused")
        return TaskGraph(CLASSIFY, info.entry, f"task {info.name}")
    if graph == "fused":
        if info.fused is None:
            raise DeviceError(f"task {info.name}: the bundle has no fused model for it (convert with --fused)")
        return TaskGraph(CLASSIFY, info.fused, f"task {info.name} fused model")
    return TaskGraph(CHAINED, info.entry, f"task {info.name}")


def backbone_user(bundle: Bundle, graph: str, task: str | None) -> str | None:
    """Who is sure to need backbone.tflite in a run of ``task`` (None: the input's tasks, any of the
    bundle's), as named in messages ("split task qnli", "--graph backbone"); None if nothing surely is.
    The client loads the backbone up front for it, so a broken file stops the run at once."""
    if graph == "backbone":
        return "--graph backbone"
    users = []
    for name in [task] if task is not None else bundle.task_names:
        try:
            info = bundle.task(name)
            kind = task_graph(info, graph).kind
        except DeviceError:  # that task's own lines will say what is wrong
            continue
        if kind != CHAINED:
            return None
        users.append(name)
    return f"split task {users[0]}" if users else None
