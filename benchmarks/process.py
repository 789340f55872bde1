"""Running a benchmark's child process and measuring it alone: wall time and peak resident memory.

Every benchmark that times a command (slicing, export, the vocabulary cut's slice and export) runs it through
`timed`, so their seconds and bytes are measured the same way and a runaway child is stopped the same way.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path


def timed(command: list[str], rss_limit: int | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process, measured on that process alone.

    With `rss_limit`, the child is killed once its resident memory passes it (rather than letting the
    kernel's OOM killer pick a victim on a shared machine), and CalledProcessError is raised.
    """
    os.sync()  # start clean: no run may pay for the previous run's dirty pages
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if rss_limit is not None:
        threading.Thread(target=watch_rss, args=(process, rss_limit), daemon=True).start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return seconds, usage.ru_maxrss * 1024


def watch_rss(process: subprocess.Popen, limit: int) -> None:
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            rss = next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
                       if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return
        if rss > limit:
            process.kill()
            return
        time.sleep(0.2)
