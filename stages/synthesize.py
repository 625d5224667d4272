"""Stage synthesize: write the built-in synthetic BraTS-style cohort to data/synthetic/."""

from gliomil import params as P
from gliomil.stage import run_stage
from gliomil.synthetic import synthesize_cohort

OUT_DIR = "data/synthetic"


def main():
    params = P.load_params()
    seed = P.integer(params, "seed", low=0)
    n_hgg = P.integer(params, "synthesize.n_hgg", low=1)
    n_lgg = P.integer(params, "synthesize.n_lgg", low=1)
    shape = P.integer_list(params, "synthesize.shape", length=3, low=16)
    workers = P.integer(params, "synthesize.workers", low=1)
    cases = synthesize_cohort(OUT_DIR, n_hgg=n_hgg, n_lgg=n_lgg, shape=tuple(shape), seed=seed,
                              workers=workers, progress=True)
    print(f"synthesize: wrote {len(cases)} subjects ({n_hgg} HGG, {n_lgg} LGG, shape {shape}) to {OUT_DIR}")


if __name__ == "__main__":
    run_stage(main)
