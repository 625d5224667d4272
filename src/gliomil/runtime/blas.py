"""Pin OpenBLAS's kernels for the stages that write data, so one params file gives one cohort on every x86 host.

The float32 matrix products of the phantom generator (``smooth_field``) and of the slice resampler
(``resample``) round differently under OpenBLAS's Haswell (AVX2) and SkylakeX (AVX-512) kernels. Measured
(``benchmarks/noise_floor.py``): on one AMD EPYC host, auto-detected kernels reproduced another host's
``data/synthetic`` and ``data/preprocessed`` hashes and the Haswell kernels this host's, and every fold's
checkpoint differed downstream. Haswell kernels run on every x86-64 CPU with AVX2 and cost nothing here
(the full cohort took 41.7 s either way). Import this module before anything imports numpy; x86 CPUs
without AVX2 (and hosts without /proc/cpuinfo) keep OpenBLAS's own choice.
"""

import os
import platform
import sys

from gliomil.runtime.cpu import cpu_flags

KERNELS = "Haswell"

if "numpy" in sys.modules:
    # OpenBLAS reads the variable once, when numpy loads it: too late now, and silently so.
    raise ImportError(
        "import gliomil.runtime.blas before numpy: OpenBLAS picks its kernels when numpy is first imported"
    )


# Haswell kernels on a CPU without AVX2 would stop the process with an illegal instruction.
if platform.machine().lower() in ("x86_64", "amd64") and "avx2" in cpu_flags():
    os.environ["OPENBLAS_CORETYPE"] = KERNELS
