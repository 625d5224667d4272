"""The data-writing stages pin OpenBLAS's kernels whatever the environment says."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = (
    "import gliomil.blas, numpy\n"
    "from threadpoolctl import threadpool_info\n"
    "print([i.get('architecture') for i in threadpool_info() if i['internal_api'] == 'openblas'][0])\n"
)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="OpenBLAS core names are x86")
@pytest.mark.parametrize("inherited", [None, "SkylakeX"])
def test_importing_gliomil_blas_first_pins_the_haswell_kernels(inherited):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    if inherited:
        env["OPENBLAS_CORETYPE"] = inherited
    shown = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "Haswell"


def test_importing_gliomil_blas_after_numpy_is_an_error():
    late = "import numpy\nimport gliomil.blas\n"
    result = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True)
    assert result.returncode != 0 and "import gliomil.blas before numpy" in result.stderr
