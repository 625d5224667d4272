"""What the CPU can do, read once from ``/proc/cpuinfo``; imports nothing heavy, so gliomil.runtime.blas may use it
before numpy loads."""

from pathlib import Path


def cpu_flags() -> set[str]:
    """The words of ``/proc/cpuinfo`` (its feature flags among them); empty where there is none (macOS, Windows)."""
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()
