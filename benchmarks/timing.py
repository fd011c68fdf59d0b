"""Helpers shared by the benchmark scripts: timing, and the machine a figure was measured on."""

import os
import platform
import statistics
import time

import torch


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


def cpu_model():
    """The processor's name (``/proc/cpuinfo``'s model name where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine():
    """One line naming what a figure depends on: architecture, CPU, cores, torch threads, the
    vector kernels torch dispatches to (AVX2 and AVX-512 kernels round differently, so a model
    trained on one can differ in its last bits from one trained on the other) and the device."""
    return (f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"{torch.backends.cpu.get_cpu_capability()} kernels, {'cuda' if torch.cuda.is_available() else 'cpu'}")
