"""Stage external: the packaged model on a labelled cohort that training never saw.

Writes metrics/external.json (AUC with DeLong's 95% interval; sensitivity, specificity and balanced accuracy
at the bundle's threshold with intervals; Brier score, calibration) and plots/external/ (per-patient
predictions, ROC and calibration tables). By default the cohort is the built-in external site; pointing
external.root at real data replaces it.
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import gliomil.runtime.blas  # noqa: F401  (first: pins OpenBLAS kernels before numpy loads, as preprocess does)

# isort: split

from gliomil import params as P
from gliomil import paths
from gliomil.data.brats import find_subjects
from gliomil.errors import GliomilError
from gliomil.evaluation.metrics import curve_tables, external_validation
from gliomil.runtime.device import default_device, make_deterministic, set_threads
from gliomil.runtime.files import write_json, write_text
from gliomil.runtime.stage import run_stage
from gliomil.serving.bundle import load_bundle
from gliomil.serving.predict import Case, predict_cases
from gliomil.vocabulary import GRADES, LABELS


def main():
    params = P.load_params()
    root = P.value(params, "external.root")
    make_deterministic()
    device = default_device()
    bundle = load_bundle(paths.BUNDLE, device)
    set_threads(bundle.inference.threads)
    cases = [Case(subject) for subject in find_subjects(root, P.value(params, "external.layout"))]
    table, skipped = predict_cases(bundle, cases, device=device, on_error=P.value(params, "external.on_error"))
    counts = table["grade"].value_counts() if not table.empty else {}
    if min(counts.get(grade, 0) for grade in GRADES) < 2:
        raise GliomilError(
            f"{root}: external validation needs at least 2 scored patients of each grade; got "
            f"{', '.join(f'{counts.get(grade, 0)} {grade}' for grade in GRADES)} ({len(skipped)} skipped)"
        )
    seen = table.loc[table["in_training_cohort"], "subject_id"].tolist()
    if seen:
        raise GliomilError(
            f"{root}: {len(seen)} case(s) have the preprocessed slices of a training patient ({', '.join(seen[:3])}): "
            f"not an external cohort"
        )
    labels, probabilities = table["grade"].map(LABELS).to_numpy(), table["probability"].to_numpy()
    metrics = external_validation(
        labels, probabilities, bundle.threshold, P.value(params, "external.n_bootstrap"), P.value(params, "seed")
    )
    write_json(paths.EXTERNAL_METRICS, {**metrics, "skipped": len(skipped)})
    write_text(paths.EXTERNAL_PLOTS / "predictions.csv", table.assign(label=labels).round(6).to_csv(index=False))
    for name, curve in curve_tables(labels, probabilities).items():
        if name != "precision_recall":
            write_text(paths.EXTERNAL_PLOTS / f"{name}.csv", curve.to_csv(index=False))
    for subject_id, reason in skipped:
        print(f"skipped {subject_id}: {reason}")
    print(
        f"external: {metrics['patients']} patients of {root}: AUC {metrics['auc']:.3f} "
        f"(95% CI {metrics['auc_ci_low']:.3f}-{metrics['auc_ci_high']:.3f}); balanced accuracy "
        f"{metrics['at_bundle_threshold']['balanced_accuracy']:.3f} at threshold {bundle.threshold:.3f}"
    )


if __name__ == "__main__":
    run_stage(main)
