"""Stage synthesize: write the built-in synthetic BraTS-style cohort to data/synthetic/."""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import gliomil.runtime.blas  # noqa: F401  (first: pins OpenBLAS kernels before numpy loads)

# isort: split

from gliomil import params as P
from gliomil import paths
from gliomil.runtime.stage import run_stage
from gliomil.synthetic.cohort import synthesize_cohort


def main():
    params = P.load_params()
    settings = P.section(params, "synthesize")
    cases = synthesize_cohort(
        paths.SYNTHETIC,
        n_hgg=settings["n_hgg"],
        n_lgg=settings["n_lgg"],
        shape=settings["shape"],
        seed=settings["seed"],
        workers=settings["workers"],
        progress=True,
        sites=settings["sites"],
        confound=settings["confound"],
    )
    print(
        f"synthesize: wrote {len(cases)} subjects ({settings['n_hgg']} HGG, {settings['n_lgg']} LGG, "
        f"shape {list(settings['shape'])}, {settings['sites']} site(s)"
        f"{', grade tied to site' if settings['confound'] else ''}) to {paths.SYNTHETIC}"
    )


if __name__ == "__main__":
    run_stage(main)
