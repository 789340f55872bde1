"""Running a benchmark's child process and measuring it alone: wall time and peak resident memory.

Every benchmark that times a command (slicing, export, the vocabulary cut's slice and export) runs it through
`timed`, so their seconds and bytes are measured the same way and a runaway child is stopped the same way.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path


def timed(command: list[str], rss_limit: int | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process, measured on that process alone.

    The peak is the child's own high-water mark (VmHWM) once it runs `command`, or the largest sum of resident
    memory over it and its descendants (an export's tracing workers) seen every 20 ms, whichever is larger: not
    the kernel's ru_maxrss, which also counts the moment between fork and exec when the child is a copy of this
    process (a benchmark that has just written a multi-GB synthetic checkpoint would lend it its memory), and
    takes the largest single process of the tree rather than what they hold together.
    With `rss_limit`, the child is killed once its resident memory passes it (rather than letting the
    kernel's OOM killer pick a victim on a shared machine), and CalledProcessError is raised.
    """
    os.sync()  # start clean: no run may pay for the previous run's dirty pages
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = [0]
    watcher = threading.Thread(target=watch_rss, args=(process, peak, rss_limit), daemon=True)
    watcher.start()
    _, status, _ = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return seconds, peak[0]


def _status(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith(field + ":"))


def _tree(root: int) -> list[int]:
    """`root` and every process descending from it, from /proc's parent links."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += parents.get(pid, [])
    return tree


def _tree_rss(root: int) -> int:
    total = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError, StopIteration):  # ended since the listing, or a zombie
            total += _status(pid, "VmRSS")
    return total


def watch_rss(process: subprocess.Popen, peak: list[int], limit: int | None) -> None:
    """Every 20 ms until `process` ends: once it has exec'd `command` (its cmdline is no longer this process's),
    its VmHWM and its process tree's resident memory into `peak[0]`; kill it if the tree's passes `limit`."""
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    forked = Path("/proc/self/cmdline").read_bytes()
    running = False
    while True:
        try:
            running = running or cmdline.read_bytes() not in (forked, b"")
            if running:
                resident = _tree_rss(process.pid)
                peak[0] = max(peak[0], _status(process.pid, "VmHWM"), resident)
                if limit is not None and resident > limit:
                    process.kill()
                    return
        except (OSError, StopIteration, ValueError):
            return  # ended (a zombie has no memory lines): the last sample stands
        time.sleep(0.02)
