"""Stage synthesize_external: the built-in external site -> data/external_site/.

The generator of the training cohort with another seed, case mix and scanner (external.site), so that the
external stage shows how much performance moves when the site changes. Cases are named SynExt_<grade>_<n>.
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import gliomil.runtime.blas  # noqa: F401  (first: pins OpenBLAS kernels before numpy loads)

# isort: split

from gliomil import params as P
from gliomil import paths
from gliomil.runtime.stage import run_stage
from gliomil.synthetic.cohort import Acquisition, synthesize_cohort


def main():
    site = P.section(P.load_params(), "external.site")
    acquisition = Acquisition(contrast=site["contrast"], bias=site["bias"], noise=site["noise"])
    cases = synthesize_cohort(
        paths.EXTERNAL_SITE,
        n_hgg=site["n_hgg"],
        n_lgg=site["n_lgg"],
        shape=site["shape"],
        seed=site["seed"],
        workers=site["workers"],
        progress=True,
        acquisition=acquisition,
        prefix="SynExt",
    )
    print(f"synthesize_external: wrote {len(cases)} subjects ({acquisition}) to {paths.EXTERNAL_SITE}")


if __name__ == "__main__":
    run_stage(main)
