"""Stage check_params: check all of params.yaml before any other stage runs (and deletes its outputs).

Every stage depends on data/params_checked.txt, whose content never changes: a valid change of params
costs nothing here, and an unknown key or a bad value stops `dvc repro` with one line naming the key.
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

from pathlib import Path

from gliomil import params as P
from gliomil import paths
from gliomil.errors import ParamsError
from gliomil.runtime.files import write_text
from gliomil.runtime.stage import run_stage


def main():
    params = P.load_params()
    P.check_params(params)
    # The built-in cohorts do not exist until the synthesize stages have written them.
    for key, built_in in (("data.root", paths.SYNTHETIC), ("external.root", paths.EXTERNAL_SITE)):
        root = Path(P.value(params, key))
        if root != built_in and not root.is_dir():
            raise ParamsError(f"params.yaml: {key}: {root} is not a folder")
    write_text(paths.PARAMS_CHECKED, "params.yaml passed every check\n")


if __name__ == "__main__":
    run_stage(main)
