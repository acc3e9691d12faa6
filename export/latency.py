"""CPU latency of exported models: median onnxruntime time per window at batch 1, models in turn."""
from __future__ import annotations

import os
import time

import numpy as np

from edge.classifier import open_session
from edge.metadata import INPUT_NAME, OUTPUT_NAME


def median_latency_ms(paths: dict, window: np.ndarray, threads: int, repeats: int = 50, block: int = 10) -> dict:
    """{name: median ms of one ``session.run`` on ``window`` (batch of one)} for every model in ``paths``.

    The models take turns in blocks of ``block`` calls, so a change in machine load shifts all of them
    alike; the first call of each block is not timed (another session's idle threads may still be
    spinning on the CPUs then).
    """
    sessions = {name: open_session(path, threads) for name, path in paths.items()}
    feed = {INPUT_NAME: window[:1]}
    times = {name: [] for name in sessions}
    while min(len(t) for t in times.values()) < repeats:
        for name, session in sessions.items():
            for i in range(block + 1):
                start = time.perf_counter()
                session.run([OUTPUT_NAME], feed)
                if i:
                    times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(t[:repeats])) for name, t in times.items()}


def latency_table(paths: dict, window: np.ndarray, threads: list, repeats: int) -> tuple:
    """({name: {str(threads): median ms}} for each thread count, CPU share other processes took meanwhile)."""
    table = {name: {} for name in paths}
    busy = OtherProcessesLoad()
    for n in threads:
        for name, ms in median_latency_ms(paths, window, n, repeats).items():
            table[name][str(n)] = ms
    return table, busy.share()


class OtherProcessesLoad:
    """Fraction of all CPUs' time used by other processes since creation (Linux /proc/stat; else None).

    Latency measured while something else runs is not this machine's latency; the report says how much
    else ran.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                jiffies = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        times = os.times()
        return sum(jiffies) / hz, (jiffies[3] + jiffies[4]) / hz, times.user + times.system

    def share(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        total, idle, own = (e - s for e, s in zip(end, self.start))
        return round(max(0.0, (total - idle - own) / total), 3)
