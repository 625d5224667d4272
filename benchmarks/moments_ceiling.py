"""What holds the tumour-moments stream back: its two parts apart, a fully fitted head on its own numbers, and the
same numbers inside the true tumour, on the held-out patients of a finished run.

    python benchmarks/moments_ceiling.py [--rev REV ...] [--preprocessed data/preprocessed]

A run is a git revision or an experiment (``dvc exp show``) whose params have ``train.model.tumour_moments: true``;
without ``--rev``, the workspace's. Its folds and each fold's selected checkpoint are read through ``dvc.api``
(from the DVC cache); the slices from ``--preprocessed``, which must be the run's (their files' DVC hash is
checked against the run's ``dvc.lock``).
Every held-out patient is scored whole, as ``evaluate`` scores it, and each row is a pooled held-out AUC:

- ``model``: the run's HGG probability (its ``prediction`` rule; the run's own pooled AUC in
  ``metrics/cv_summary.json``, the check that this script scores as ``evaluate`` does);
- ``moments stream alone`` and ``MIL stream alone``: the stream's logit, and the bag logit without it;
- ``refit on its moments``: the baselines' regression (:func:`gliomil.baselines.logistic.fit_predict`) on the nine
  numbers the fold's own segmenter measures (13 with the regions: and the four the encoder's head measures), fitted
  on the fold's training and inner-validation patients: what a fully fitted linear head on the stream's numbers
  gives;
- ``true tumour, 64 px``: the same regression on the same nine numbers measured inside the true whole-tumour map
  (the pixels at least half tumour): their ceiling at the model's resolution, with a perfect segmenter;
- ``true interior, 64 px``: the same inside the pixels at least ``INTERIOR`` tumour, what the segmenter is taught
  (:meth:`gliomil.model.moments.TumourMoments.pixel_targets`);
- ``true tumour, 64 px, 21 statistics``: the same inside the same map with the 10/50/90th percentiles too
  (:func:`gliomil.baselines.segmented.mask_statistics`, ``predicted_mask``'s numbers): what more statistics give;
- ``true tumour, native resolution``: the same nine numbers of the NIfTI volumes inside the segmentation
  (``data/baseline_features.csv``, ``seg_statistics``' means, SDs and log size): what the resolution costs.

Then the segmenter's Dice against the interior on the held-out patients' brain pixels (mean over patients).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import dvc.api
import numpy as np
import pandas as pd
import torch
import yaml
from noise_floor import dvc_dir_hash  # benchmarks/noise_floor.py: DVC's hash of an output folder
from sklearn.metrics import roc_auc_score

from gliomil.baselines.logistic import fit_predict
from gliomil.baselines.segmented import brain_pixels, mask_statistics
from gliomil.data.bags import BagSet
from gliomil.data.folds import FoldSplit
from gliomil.evaluation.scoring import score_bags
from gliomil.model.checkpoint import load_checkpoint
from gliomil.model.moments import INTERIOR, TumourMoments
from gliomil.runtime.device import autocast_dtype
from gliomil.vocabulary import MODALITIES

ROWS = (
    "model",
    "moments stream alone",
    "MIL stream alone",
    "refit on its moments",
    "true tumour, 64 px",
    "true interior, 64 px",
    "true tumour, 64 px, 21 statistics",
    "true tumour, native resolution",
)
#: ``data/baseline_features.csv``'s columns of the stream's nine numbers, in :meth:`TumourMoments.moments`' order.
NATIVE = [f"{m}_tumour_{s}" for s in ("mean", "std") for m in MODALITIES] + ["log_tumour_voxels"]


def preprocessed_hash(rev: str | None) -> str:
    """The md5 of ``data/preprocessed`` in the run's ``dvc.lock``."""
    lock = yaml.safe_load(dvc.api.read("dvc.lock", rev=rev))
    return next(out["md5"] for out in lock["stages"]["preprocess"]["outs"] if out["path"] == "data/preprocessed")


def true_tumour(bag: np.ndarray, maps: np.ndarray, share: float = 0.5) -> np.ndarray:
    """bool (S, H, W): the brain pixels of a bag (S, 4, H, W) at least ``share`` tumour in its maps (S, M, H, W)
    uint8; where none is, every brain pixel with some tumour (a small tumour on small slices)."""
    brain = brain_pixels(bag)
    mask = (maps[:, 0] / 255 >= share) & brain
    return mask if mask.any() else (maps[:, 0] > 0) & brain


def true_moments(bag: np.ndarray, tumour: np.ndarray, shape: bool = False) -> np.ndarray:
    """(9,) the stream's numbers (:meth:`gliomil.model.moments.TumourMoments.moments`) of a bag (S, 4, H, W) inside
    the mask ``tumour`` (S, H, W); (10,) with ``shape``, the mask's outline last (``train.model.tumour_shape``)."""
    slices = torch.from_numpy(np.asarray(bag, dtype=np.float32))
    logits = torch.where(torch.from_numpy(tumour[:, None]), 1.0, -1.0)  # >= 0 exactly on the mask
    total = TumourMoments.slice_sums(slices, logits, shape).sum(dim=0, keepdim=True)
    return TumourMoments(slices.shape[1], shape=shape).moments(total, torch.tensor([len(bag)]))[0].numpy()


def run_rows(rev: str | None, preprocessed: str, slices_hash: str) -> tuple[dict[str, float], float]:
    """Pooled held-out AUC per row of ``ROWS`` and the segmenter's mean held-out Dice for one run, on the slices in
    ``preprocessed``, whose DVC hash (``noise_floor.dvc_dir_hash``, ``.dir`` included) is ``slices_hash``."""
    params = yaml.safe_load(dvc.api.read("params.yaml", rev=rev))
    if not params["train"]["model"].get("tumour_moments", False):
        raise SystemExit(f"moments_ceiling: run {rev or 'workspace'} has train.model.tumour_moments false")
    if slices_hash != preprocessed_hash(rev):
        raise SystemExit(f"moments_ceiling: {preprocessed} is not run {rev or 'workspace'}'s (its files differ)")
    dtype = autocast_dtype(torch.device("cpu"), params["train"].get("amp", True))
    native = pd.read_csv(io.StringIO(dvc.api.read("data/baseline_features.csv", rev=rev)), dtype={"subject_id": str})
    native = native.set_index("subject_id")[NATIVE]
    scores = {row: [] for row in ROWS}
    labels, dice = [], []
    store: BagSet | None = None
    truth, interior, statistics = {}, {}, {}  # per subject: the true map's numbers do not depend on the fold
    for fold in params["folds"]:
        data = json.loads(dvc.api.read(f"data/splits/fold_{fold}.json", rev=rev))
        split = FoldSplit(int(data["fold"]), data["train"], data["inner_val"], data["test"])
        if store is None:
            store = BagSet.load(preprocessed, [*split.train, *split.inner_val, *split.test], tumour_maps=True)
            index = {subject: i for i, subject in enumerate(store.subject_ids)}
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Path(tmp) / "best.pt"
            checkpoint.write_bytes(dvc.api.read(f"models/fold_{fold}/best.pt", rev=rev, mode="rb"))
            model, _ = load_checkpoint(checkpoint)
        model.eval()
        fit_on = [index[s] for s in (*split.train, *split.inner_val)]
        test = [index[s] for s in split.test]
        scored = score_bags(model, [store.bags[i] for i in test], torch.device("cpu"), dtype=dtype)
        measured = {}
        with torch.no_grad():
            for i in fit_on + test:
                slices = torch.from_numpy(np.asarray(store.bags[i], dtype=np.float32))
                regions = model.encoder.encode(slices)[1] if model.moments.regions else None  # read only with them
                logits, sums = model.moments.measure(slices, regions)
                sums = sums.sum(dim=0, keepdim=True)
                size = torch.tensor([len(slices)])
                measured[i] = (model.moments.moments(sums, size)[0].numpy(), model.moments.bag_logits(sums, size)[0])
                if i not in truth or i in test:  # the interior: once for its numbers, again for each held-out Dice
                    inside = true_tumour(store.bags[i], store.tumour_maps[i], INTERIOR)
                if i not in truth:
                    tumour = true_tumour(store.bags[i], store.tumour_maps[i])
                    truth[i] = true_moments(store.bags[i], tumour)
                    statistics[i] = mask_statistics(store.bags[i], tumour)
                    interior[i] = true_moments(store.bags[i], inside)
                if i in test:
                    mask = (logits[:, 0] >= 0).numpy() & brain_pixels(store.bags[i])
                    dice.append(2 * (inside & mask).sum() / max(inside.sum() + mask.sum(), 1))
        stream = np.array([float(measured[i][1]) for i in test])
        y = store.labels
        scores["model"].append(scored.probabilities)
        scores["moments stream alone"].append(stream)
        scores["MIL stream alone"].append(scored.bag_logits - stream)
        own = {i: numbers for i, (numbers, _) in measured.items()}
        tables = {
            "refit on its moments": own,
            "true tumour, 64 px": truth,
            "true interior, 64 px": interior,
            "true tumour, 64 px, 21 statistics": statistics,
            "true tumour, native resolution": {i: native.loc[store.subject_ids[i]].to_numpy() for i in own},
        }
        for row, table in tables.items():
            train_x, test_x = np.stack([table[i] for i in fit_on]), np.stack([table[i] for i in test])
            scores[row].append(fit_predict(train_x, y[fit_on], test_x))
        labels.append(y[test])
    truth_labels = np.concatenate(labels)
    return {row: float(roc_auc_score(truth_labels, np.concatenate(parts))) for row, parts in scores.items()}, float(
        np.mean(dice)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", action="append", default=[], help="a git revision or experiment; repeatable")
    parser.add_argument("--preprocessed", default="data/preprocessed")
    args = parser.parse_args()
    runs = args.rev or [None]
    slices_hash = dvc_dir_hash(Path(args.preprocessed))[0] + ".dir"
    results = [run_rows(rev, args.preprocessed, slices_hash) for rev in runs]
    print("| pooled held-out AUC | " + " | ".join(rev or "workspace" for rev in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for row in ROWS:
        print(f"| {row} | " + " | ".join(f"{rows[row]:.3f}" for rows, _ in results) + " |")
    print("| segmenter's held-out Dice | " + " | ".join(f"{d:.3f}" for _, d in results) + " |")


if __name__ == "__main__":
    main()
