"""Timing helper shared by the benchmark scripts."""

import statistics
import time


def median_seconds(fn, repeats, warmups=1):
    """Median wall seconds of ``repeats`` calls of ``fn`` after ``warmups`` untimed ones."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
