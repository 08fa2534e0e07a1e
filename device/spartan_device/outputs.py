"""Where results go: JSON lines to stdout or to a file written atomically; a progress bar on stderr."""

from __future__ import annotations

import glob
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from spartan_device.errors import DeviceError


_OPEN_TEMPORARIES: set = set()  # temporary files being written, for remove_open_temporaries()


def remove_open_temporaries():
    """Remove every temporary output file still being written (called on SIGTERM/SIGHUP, right
    before the process exits without unwinding)."""
    for name in list(_OPEN_TEMPORARIES):
        try:
            os.unlink(name)
        except OSError:
            pass
        _OPEN_TEMPORARIES.discard(name)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by clients that died before they could (SIGKILL,
    power loss): ``.<name>.<pid>.<random>.tmp`` whose process no longer runs. Returns them."""
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = candidate.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: leave its file alone
    return True


class JsonLinesOutput:
    """JSON lines to stdout (flushed per window, for streaming) or to ``path`` via a temporary file in
    the same directory (``.<name>.<pid>.<random>.tmp``), renamed over ``path`` only by :meth:`commit`.
    An existing ``path`` is refused unless ``force``. A run removes what killed runs left behind
    (``remove_stale_temporaries``); on SIGTERM and SIGHUP infer.py removes the temporary file
    (``remove_open_temporaries``) before it exits."""

    def __init__(self, path: str | None, force: bool = False):
        self.path = None if path in (None, "-") else Path(path)
        self._tmp = None
        if self.path is None:
            self._handle = sys.stdout.buffer  # bytes: UTF-8 whatever the locale says
            return
        if self.path.exists() and not force:
            raise DeviceError(f"--output {self.path}: already exists; pass --force to replace it")
        if self.path.is_dir():
            raise DeviceError(f"--output {self.path}: is a directory")
        directory = self.path.parent
        if not directory.is_dir():
            raise DeviceError(f"--output {self.path}: directory {directory} does not exist")
        remove_stale_temporaries(self.path)
        try:
            fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.{os.getpid()}.", suffix=".tmp")
        except OSError as err:
            raise DeviceError(f"--output {self.path}: cannot write there ({err.strerror})") from None
        _OPEN_TEMPORARIES.add(self._tmp)
        self._handle = os.fdopen(fd, "wb")

    def write(self, obj: dict):
        """One JSON line in UTF-8; a string UTF-8 cannot hold (a lone surrogate from a JSON id) is
        written as its JSON escape instead."""
        try:
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            data = json.dumps(obj, ensure_ascii=True).encode("ascii")
        self._handle.write(data + b"\n")

    def flush(self):
        self._handle.flush()

    def commit(self):
        """Finish: stdout is flushed; a file is synced and moved into place."""
        if self._tmp is None:
            self._handle.flush()
            return
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._tmp, self.path)
        _OPEN_TEMPORARIES.discard(self._tmp)
        self._tmp = None

    def discard(self):
        """Abandon a file output (on a fatal error): the temporary file is removed, ``path`` untouched."""
        if self._tmp is not None:
            self._handle.close()
            Path(self._tmp).unlink(missing_ok=True)
            _OPEN_TEMPORARIES.discard(self._tmp)
            self._tmp = None


class Progress:
    """``[#####.....] 120/300 lines  45.2 texts/s`` on stderr, redrawn at most 10 times a second.
    Messages printed through :meth:`message` clear the bar first."""

    def __init__(self, total: int | None, enabled: bool, width: int = 30):
        self.total, self.enabled, self.width = total, enabled, width
        self.done = self.texts = 0
        self.start = self._last = time.perf_counter()
        self._shown = False

    def advance(self, lines: int, texts: int):
        self.done += lines
        self.texts += texts
        now = time.perf_counter()
        if self.enabled and (now - self._last >= 0.1 or (self.total and self.done >= self.total)):
            self._last = now
            self._draw(now)

    def _draw(self, now: float):
        rate = self.texts / max(now - self.start, 1e-9)
        if self.total:
            filled = int(self.width * min(self.done / self.total, 1.0))
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} lines"
        else:
            bar = f"{self.done} lines"
        sys.stderr.write(f"\r{bar}  {rate:.1f} texts/s")
        sys.stderr.flush()
        self._shown = True

    def message(self, text: str):
        if self._shown:
            sys.stderr.write("\r\033[K")
            self._shown = False
        print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.enabled:
            if not self._shown:
                self._draw(time.perf_counter())
            sys.stderr.write("\n")
            sys.stderr.flush()
