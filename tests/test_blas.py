"""The data-writing stages pin OpenBLAS's kernels whatever the environment says."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = (
    "import gliomil.runtime.blas, numpy\n"
    "from threadpoolctl import threadpool_info\n"
    "print([i.get('architecture') for i in threadpool_info() if i['internal_api'] == 'openblas'][0])\n"
)


def _x86_with_avx2() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return platform.machine().lower() in ("x86_64", "amd64") and " avx2" in flags


@pytest.mark.skipif(not _x86_with_avx2(), reason="gliomil.runtime.blas pins kernels only on x86 CPUs with AVX2")
@pytest.mark.parametrize("inherited", [None, "SkylakeX"])
def test_importing_gliomil_blas_first_pins_the_haswell_kernels(inherited):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    if inherited:
        env["OPENBLAS_CORETYPE"] = inherited
    shown = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "Haswell"


def test_importing_gliomil_blas_after_numpy_is_an_error():
    late = "import numpy\nimport gliomil.runtime.blas\n"
    result = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True)
    assert result.returncode != 0 and "import gliomil.runtime.blas before numpy" in result.stderr
