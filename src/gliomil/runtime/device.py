"""Where and how precisely torch computes: the device, CPU threads, deterministic kernels, the autocast dtype.

One policy for every stage that trains or scores (train, evaluate, external, predict); it knows nothing of models.
"""

from __future__ import annotations

import os

import torch

from gliomil.runtime.cpu import cpu_flags


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads: int) -> int:
    """Pin torch's CPU threads (0 keeps torch's default, one per physical core); returns the number in use.

    The thread count changes how sums are split, so 1 and 2 threads give different checkpoints (measured by
    benchmarks/noise_floor.py): it belongs to what a reproducible run fixes.
    """
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def make_deterministic() -> None:
    """The same inputs give the same bits on a GPU too: cuDNN's autotuner off (it picks kernels by timing),
    deterministic algorithms where they exist (a one-time warning names an op that has none), and cuBLAS's fixed
    workspace, which must be set before CUDA starts (``CUBLAS_WORKSPACE_CONFIG``; a value set by the user is kept).
    On the CPU none of this changes a result. Called by every stage that trains or scores, before any model exists.

    ``torch.set_deterministic_debug_mode("warn")`` sets the flag of ``torch.use_deterministic_algorithms(True,
    warn_only=True)``; the latter also imports torch's compiler to set its config, 2 s at every stage's start, and
    nothing here compiles.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.set_deterministic_debug_mode("warn")


def _cpu_has_native_bf16() -> bool:
    return not cpu_flags().isdisjoint({"avx512_bf16", "amx_bf16"})


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for plain float32.

    CUDA: float16 (with gradient scaling). CPU: bfloat16 only where the CPU computes it natively
    (measured 1.6x faster than float32 for this encoder on such a CPU; elsewhere it is emulated and
    slower), so the choice depends on the machine, never on a timing.
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if _cpu_has_native_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """How :func:`autocast_dtype`'s choice is printed and recorded."""
    return {None: "float32", torch.bfloat16: "bfloat16 autocast", torch.float16: "float16 autocast"}[dtype]
