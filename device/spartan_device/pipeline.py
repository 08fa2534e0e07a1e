"""Classify a stream of records: windows of lines, grouped by task, sorted by length, cut into batches.

Results come back in input order. A file is read ahead in a thread and processed in full windows;
a stream (stdin) is processed as soon as no further line is waiting, so each line is answered
without waiting for the next one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from spartan_device.bundle import TaskInfo
from spartan_device.engine import Engine, pad, scores
from spartan_device.errors import DeviceError
from spartan_device.inputs import BadLine, Record

_END = object()


@dataclass
class Outcome:
    """Per input line: ``result`` (a dict for the output) or ``error`` (a message)."""

    line: int
    result: dict | None = None
    error: str | None = None


def check_pair(info: TaskInfo, record: Record) -> str | None:
    """An error message when a record's shape (single text or pair) contradicts its task's (as shown
    by the task's reference inputs in the manifest)."""
    takes_pair = info.takes_pair
    if takes_pair is True and record.text_pair is None:
        return f"task {record.task} takes a text pair (text and text_pair), this line has one text"
    if takes_pair is False and record.text_pair is not None:
        return f"task {record.task} takes a single text, this line has a text pair"
    return None


def classify(engine: Engine, records: list[Record], batch_size: int) -> list[Outcome]:
    """Outcomes for ``records`` (same order); a task that cannot be used fails its own lines only."""
    outcomes: list[Outcome | None] = [None] * len(records)
    by_task: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_task.setdefault(record.task, []).append(index)
    for name, indexes in by_task.items():
        try:
            task = engine.task(name)
        except DeviceError as err:
            for i in indexes:
                outcomes[i] = Outcome(records[i].line, error=str(err))
            continue
        usable = []
        for i in indexes:
            problem = check_pair(task.info, records[i])
            if problem:
                outcomes[i] = Outcome(records[i].line, error=problem)
            else:
                usable.append(i)
        if not usable:
            continue
        encodings = engine.encode(task.info, [(records[i].text, records[i].text_pair) for i in usable])
        order = sorted(range(len(usable)), key=lambda k: len(encodings[k].ids))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            try:
                logits = engine.logits(task, pad([encodings[k] for k in chunk]))
            except (DeviceError, RuntimeError, ValueError) as err:
                for k in chunk:
                    outcomes[usable[k]] = Outcome(records[usable[k]].line, error=f"task {name}: inference failed ({err})")
                continue
            for k, result in zip(chunk, scores(task.info, logits)):
                record = records[usable[k]]
                outcomes[usable[k]] = Outcome(record.line, {"id": record.id, "task": name, **result})
    return outcomes


def run(engine: Engine, items: Iterable[Record | BadLine], batch_size: int, window: int, streaming: bool,
        emit: Callable[[list[Outcome], int], None]):
    """Classify every item; ``emit(outcomes, texts)`` gets each window's outcomes in input order."""
    pending: list[Record | BadLine] = []
    for item, waiting in _read_ahead(items, window):
        if item is not _END:
            pending.append(item)
        if pending and (item is _END or len(pending) >= window or (streaming and not waiting)):
            records = [x for x in pending if isinstance(x, Record)]
            done = iter(classify(engine, records, batch_size))
            emit([Outcome(x.line, error=x.message) if isinstance(x, BadLine) else next(done) for x in pending],
                 len(records))
            pending = []


def _read_ahead(items: Iterable, window: int) -> Iterator[tuple[object, bool]]:
    """(item, whether more items are already waiting), then (_END, False); reads in a thread.
    An exception of the reader (e.g. a DeviceError for a whole file) is re-raised here."""
    buffer: queue.Queue = queue.Queue(maxsize=max(2 * window, 64))

    def reader():
        try:
            for item in items:
                buffer.put(item)
            buffer.put(_END)
        except BaseException as err:  # handed to the main thread
            buffer.put(err)

    threading.Thread(target=reader, daemon=True, name="input-reader").start()
    while True:
        item = buffer.get()
        if isinstance(item, BaseException):
            raise item
        if item is _END:
            yield _END, False
            return
        yield item, not buffer.empty()
