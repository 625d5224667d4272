"""``gliomil predict``: score new patients with a packaged model (:mod:`gliomil.serving.bundle`).

Input is one of:

* a folder: a BraTS 2018/2019 tree, a BraTS 2020 tree or a ``labels.csv`` tree (their grades are reported
  beside the predictions), one case folder, a folder of case folders, or loose ``<case>_<suffix>.nii[.gz]``
  files (see :func:`gliomil.data.brats.find_cases`);
* four files: ``--flair F --t1 F --t1ce F --t2 F`` (and ``--seg F``).

The segmentation is optional. Every case goes through the checks and preprocessing of training
(:func:`gliomil.data.preprocess.preprocess_case`, with the bundle's settings) and is scored by every fold model.
The output folder appears whole or not at all::

    predictions.csv, predictions.json   one row per case (see :data:`COLUMNS`)
    montages/<case>.png                 the most attended slices, FLAIR and T1ce side by side
    skipped.csv                         cases skipped with --on-error skip, and why

Usage: ``gliomil predict INPUT --out DIR [--bundle bundle]`` (or ``python -m gliomil.serving.predict``).
"""

from __future__ import annotations

if __name__ == "__main__":
    from gliomil.runtime import blas  # noqa: F401  (before numpy: OpenBLAS kernels as the preprocess stage pins them)

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from gliomil.data.brats import SEGMENTATION, SUFFIX_KEYS, Subject, check_case_id, find_cases, resolve_files
from gliomil.data.preprocess import SliceBag, preprocess_case
from gliomil.data.slices import content_hash
from gliomil.errors import GliomilError, InputError
from gliomil.evaluation.plots import plot_attention_montage
from gliomil.evaluation.scoring import score_bags
from gliomil.runtime import interrupts
from gliomil.runtime.device import autocast_dtype, default_device, set_threads
from gliomil.runtime.files import atomic_directory, write_text
from gliomil.runtime.stage import run_command
from gliomil.serving.bundle import Bundle, load_bundle
from gliomil.vocabulary import GRADES, LABELS, LAYOUTS, MODALITIES

MAX_TOP = 10  # most attended slices reported and drawn, at most

#: What each column of predictions.csv means (the README's table is this one).
COLUMNS = {
    "subject_id": "the case's id (its folder or file-name prefix)",
    "grade": "the grade the input folder gives (BraTS trees, labels.csv); empty when unknown",
    "probability": "ensemble HGG probability: the mean of the fold models' probabilities",
    "decision": "HGG when probability >= threshold, else LGG",
    "threshold": "the bundle's decision threshold",
    "fold_agreement": "share of fold models whose own decision at the threshold equals the ensemble's",
    "probability_sd": "standard deviation of the fold models' probabilities",
    "probability_fold_<k>": "fold k's model's HGG probability",
    "critical_slice": "slice with the highest mean instance score (DSMIL's critical instance), as an index along "
    "the input volume's axial voxel axis (0-based, as a viewer of the input file counts); empty for an aggregator "
    "without instance scores (abmil)",
    "most_attended_slices": "the slices with the highest mean attention, most attended first, same indexing; "
    "empty for an aggregator without attention (mean, max)",
    "n_slices": "axial slices kept by preprocessing (the bag's size)",
    "in_training_cohort": "true when the preprocessed slices equal a training patient's (so not an independent case)",
    "montage": "the attention montage, relative to the output folder (empty with --no-montage, and for an "
    "aggregator without both attention and instance scores)",
}


@dataclass(frozen=True)
class Case:
    """A case to score: ``files`` are its explicit paths (four loose files); else they are found in
    ``subject.directory`` by the bundle's suffixes."""

    subject: Subject
    files: dict[str, Path] | None = None


@dataclass
class CaseScores:
    """One case scored by every fold model (F folds, S kept slices)."""

    fold_probabilities: np.ndarray  # (F,) HGG probability of each fold's model
    attention: np.ndarray | None  # (F, S) each model's attention over the slices (sums to 1 per model)
    instance_probabilities: np.ndarray | None  # (F, S) sigmoid of each model's instance logits

    @property
    def probability(self) -> float:
        return float(self.fold_probabilities.astype(np.float64).mean())

    @property
    def mean_attention(self) -> np.ndarray:
        return self.attention.astype(np.float64).mean(axis=0)

    @property
    def mean_instance_probability(self) -> np.ndarray:
        return self.instance_probabilities.astype(np.float64).mean(axis=0)

    @property
    def critical(self) -> int | None:
        """Bag index of the slice with the highest mean instance score (DSMIL's critical instance); None without
        instance scores."""
        if self.instance_probabilities is None:
            return None
        return int(np.argmax(self.mean_instance_probability))

    def most_attended(self, top: int) -> np.ndarray:
        """Bag indices of the ``top`` slices with the highest mean attention, most attended first (none without
        attention)."""
        if self.attention is None:
            return np.array([], dtype=np.int64)
        return np.argsort(-self.mean_attention, kind="stable")[:top]


def score_case(bundle: Bundle, slices: np.ndarray, device: torch.device, dtype: torch.dtype | None) -> CaseScores:
    """Score one bag (float16 (S, 4, H, W), as preprocessing stores it) with every fold model of ``bundle``,
    exactly as the evaluate stage scores a held-out patient."""
    chunk = bundle.inference.eval_chunk
    scores = [score_bags(model, [slices], device, chunk, dtype) for _, model in sorted(bundle.models.items())]
    return CaseScores(
        fold_probabilities=np.array([s.probabilities[0] for s in scores]),
        attention=None if scores[0].attention is None else np.stack([s.attention for s in scores]),
        instance_probabilities=(
            None if scores[0].instance_logits is None else np.stack([expit(s.instance_logits) for s in scores])
        ),
    )


def tumour_planes(seg: np.ndarray, bag: SliceBag) -> np.ndarray:
    """The tumour (seg > 0) of the kept slices, resized like the images: float32 (S, H, W) in [0, 1]."""
    return bag.geometry.resize(bag.geometry.planes(seg > 0).astype(np.float32))


def prediction_row(case: Case, bag: SliceBag, scores: CaseScores, stored_z: np.ndarray, bundle: Bundle, top: int):
    """One row of predictions.csv (see :data:`COLUMNS`), probabilities unrounded."""
    threshold = bundle.threshold
    probability = scores.probability
    decision = probability >= threshold
    row = {
        "subject_id": case.subject.subject_id,
        "grade": case.subject.grade or "",
        "probability": probability,
        "decision": GRADES[int(decision)],
        "threshold": threshold,
        "fold_agreement": float(np.mean((scores.fold_probabilities >= threshold) == decision)),
        "probability_sd": float(scores.fold_probabilities.astype(np.float64).std()),
    }
    for fold, value in zip(sorted(bundle.models), scores.fold_probabilities):
        row[f"probability_fold_{fold}"] = float(value)
    row.update(
        critical_slice="" if scores.critical is None else int(stored_z[scores.critical]),
        most_attended_slices=" ".join(str(int(stored_z[i])) for i in scores.most_attended(top)),
        n_slices=len(bag.slices),
        in_training_cohort=content_hash(bag.slices) in bundle.training_content_hashes,
    )
    return row


def predict_cases(
    bundle: Bundle,
    cases: list[Case],
    *,
    device: torch.device,
    on_error: str = "fail",
    montage_dir: Path | None = None,
    top: int = 3,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Score ``cases`` one after another; returns the predictions table and the skipped (case, reason) pairs.

    With ``on_error="fail"`` the first bad case raises its :class:`InputError`; with ``"skip"`` it is listed.
    ``montage_dir``, when given, receives ``<case>.png`` per scored case.
    """
    dtype = autocast_dtype(device, bundle.inference.amp)
    rows, skipped = [], []
    for case in tqdm(cases, desc="predict", unit="case", disable=not progress):
        interrupts.check(f"before case {case.subject.subject_id}")
        subject_id = case.subject.subject_id
        try:
            files = case.files or resolve_files(case.subject, bundle.suffixes, seg_required=False)
            # One BLAS thread, as in the preprocess stage's workers: the resampling's sums are then split the
            # same way, so a training patient's slices come out bit-identical (and, on busy cores, much faster).
            with threadpool_limits(limits=1, user_api="blas"):
                volumes, bag = preprocess_case(subject_id, files, bundle.preprocess)
        except InputError as exc:
            if on_error == "fail":
                raise
            skipped.append((subject_id, str(exc)))
            continue
        scores = score_case(bundle, bag.slices, device, dtype)
        stored_z = volumes.stored_axial_index(bag.z_index)
        row = prediction_row(case, bag, scores, stored_z, bundle, top)
        row["montage"] = ""
        if montage_dir is not None and scores.attention is not None and scores.critical is not None:
            row["montage"] = f"{montage_dir.name}/{subject_id}.png"
            plot_attention_montage(
                bag.slices,
                scores.mean_attention,
                scores.mean_instance_probability,
                stored_z,
                list(scores.most_attended(top)),
                scores.critical,
                tumour_planes(volumes.seg, bag) if volumes.seg is not None else None,
                montage_dir / f"{subject_id}.png",
                f"{subject_id}: P(HGG) {row['probability']:.3f} -> {row['decision']} at {bundle.threshold:.3f}",
            )
        rows.append(row)
        del volumes, bag
    return pd.DataFrame(rows), skipped


# -- command line -------------------------------------------------------------------------------


def loose_case(files: dict[str, Path | None], case_id: str | None, flair_suffix: str) -> Case:
    """A case from explicit files (None where not given); its id is ``case_id`` or flair's name without
    ``_<flair suffix>.nii[.gz]``."""
    flair = files["flair"]
    if case_id is None:
        case_id = flair.name.removesuffix(".gz").removesuffix(".nii").removesuffix(f"_{flair_suffix}")
    check_case_id(case_id, "--case-id")
    given = {key: Path(path) for key, path in files.items() if path is not None}
    for key in SUFFIX_KEYS:
        if key in given and not given[key].is_file():
            raise InputError(case_id, given[key], f"{key} file does not exist")
    return Case(Subject(case_id, None, case_id, flair.parent), given)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gliomil predict",
        description="Score patients with a packaged gliomil model: one row per case, plus attention montages.",
    )
    parser.add_argument("input", nargs="?", type=Path, help="a BraTS or labels.csv tree, a case folder or folders")
    for key in (*MODALITIES, SEGMENTATION):
        parser.add_argument(f"--{key}", type=Path, help=f"the {key} file of one case (instead of INPUT)")
    parser.add_argument("--case-id", help="id of the case given by --flair ... (default: from the flair file name)")
    parser.add_argument("--bundle", type=Path, default=Path("bundle"), help="the packaged model (default: bundle)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto", help="layout of a labelled INPUT tree")
    parser.add_argument("--on-error", choices=("fail", "skip"), default="fail", help="a bad case stops or is listed")
    parser.add_argument("--top", type=int, default=3, help="most attended slices reported and drawn (default 3)")
    parser.add_argument("--no-montage", action="store_true", help="skip the attention montages")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the bundle's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    explicit = [key for key in (*MODALITIES, SEGMENTATION) if getattr(args, key) is not None]
    if (args.input is None) == (not explicit):
        parser.error("give either INPUT or the files --flair, --t1, --t1ce, --t2 (and optionally --seg)")
    missing = [f"--{key}" for key in MODALITIES if getattr(args, key) is None]
    if explicit and missing:
        parser.error(f"missing {', '.join(missing)}")
    if not 1 <= args.top <= MAX_TOP:
        parser.error(f"--top must be between 1 and {MAX_TOP}")
    return args


def check_out_folder(out: Path, overwrite: bool, keep: list[Path]) -> None:
    """Refuse an ``out`` that is a file, holds something (unless ``overwrite``), or would replace or be read as
    one of the ``keep`` paths (the input, its files, the bundle)."""
    if out.exists() and not out.is_dir():
        raise GliomilError(f"{out}: is a file; --out must be a folder")
    resolved = out.resolve()
    for path in keep:
        path = path.resolve()
        if resolved == path or resolved in path.parents or path in resolved.parents:
            raise GliomilError(f"{out}: --out must be a new folder outside {path} and not contain it")
    if out.exists() and not overwrite and any(out.iterdir()):
        raise GliomilError(f"{out}: already exists and is not empty; choose another --out or pass --overwrite")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = default_device()
    bundle = load_bundle(args.bundle, device)
    given = {key: getattr(args, key) for key in (*MODALITIES, SEGMENTATION)}
    if args.input is not None:
        cases = [Case(subject) for subject in find_cases(args.input, args.layout, bundle.suffixes)]
        inputs = [args.input]
    else:
        cases = [loose_case(given, args.case_id, bundle.suffixes["flair"])]
        inputs = [path for path in given.values() if path is not None]
    out = args.out
    check_out_folder(out, args.overwrite, [*inputs, args.bundle])
    set_threads(bundle.inference.threads if args.threads is None else args.threads)
    with atomic_directory(out) as tmp:
        montages = None if args.no_montage else tmp / "montages"
        table, skipped = predict_cases(
            bundle, cases, device=device, on_error=args.on_error, montage_dir=montages, top=args.top
        )
        if table.empty:
            raise GliomilError(f"none of the {len(cases)} case(s) could be scored; reasons: {skipped[0][1]} ...")
        write_predictions(tmp, table, skipped, bundle)
    for subject_id, reason in skipped:
        print(f"skipped {subject_id}: {reason}")
    for row in table.head(20).itertuples():
        agreement = f"fold agreement {row.fold_agreement:.0%}"
        print(f"{row.subject_id}: P(HGG) {row.probability:.3f} -> {row.decision} ({agreement})")
    print(f"predict: {len(table)} of {len(cases)} case(s) scored -> {out}/predictions.csv ({len(skipped)} skipped)")


def write_predictions(out: Path, table: pd.DataFrame, skipped: list[tuple[str, str]], bundle: Bundle) -> None:
    """predictions.csv, predictions.json (the same rows, plus the bundle's identity) and skipped.csv; numbers are
    rounded to 6 decimals."""
    table = table.round(6)
    write_text(out / "predictions.csv", table.to_csv(index=False))
    skipped_table = pd.DataFrame(skipped, columns=["subject_id", "reason"])
    write_text(out / "skipped.csv", skipped_table.to_csv(index=False))
    manifest = bundle.manifest
    document = {
        "bundle": {
            "directory": str(bundle.directory),
            "training_cohort_sha256": manifest["training"]["cohort_sha256"],
            "threshold": manifest["threshold"]["value"],
            "folds": sorted(bundle.models),
        },
        "labels": dict(LABELS),
        "columns": COLUMNS,
        "predictions": json.loads(table.to_json(orient="records")),
        "skipped": skipped_table.to_dict(orient="records"),
    }
    write_text(out / "predictions.json", json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    run_command(main)
