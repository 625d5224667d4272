"""The packaged model: every fold's checkpoint and one manifest, enough to score a new patient anywhere.

A bundle is a folder::

    <bundle>/manifest.json   what scoring needs (preprocessing, modalities and file suffixes, label map,
                             probability rule, decision threshold, inference precision) and where the
                             models came from (params, code, package versions, training cohort)
    <bundle>/fold_<k>.pt     fold k's best checkpoint (``torch.load(..., weights_only=True)``)

It needs neither the repository nor its ``params.yaml``: :func:`load_bundle` rebuilds everything from the
manifest, after checking each checkpoint against the SHA-256 the manifest records.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from gliomil import code_version
from gliomil.data.brats import SUFFIX_KEYS
from gliomil.data.preprocess import PreprocessSettings
from gliomil.errors import GliomilError
from gliomil.evaluation.metrics import youden_threshold
from gliomil.model.checkpoint import load_checkpoint
from gliomil.model.mil import MILModel
from gliomil.runtime.files import atomic_directory, write_bytes, write_text
from gliomil.vocabulary import GRADES, LABELS, MODALITIES

FORMAT = "gliomil-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PACKAGES = ("torch", "numpy", "scipy", "nibabel", "scikit-learn", "pandas")
THRESHOLD_METHOD = (
    "Youden's J (sensitivity + specificity - 1, ties to the highest threshold) on the pooled inner-validation "
    "predictions: each fold's model scored its own inner-validation patients, which it was not trained on (they "
    "chose its best epoch) and which are not held-out patients of the cross-validation. Applied to the ensemble "
    "probability (the mean over folds), which is a little less spread than one model's."
)


@dataclass(frozen=True)
class InferenceSettings:
    """How the models are run: ``amp`` as :func:`gliomil.runtime.device.autocast_dtype` reads it, slices per
    encoder chunk, and CPU threads (0 = torch's default)."""

    amp: bool
    eval_chunk: int
    threads: int


@dataclass
class Bundle:
    """A loaded bundle: its folder, its manifest and one model per fold (eval mode)."""

    directory: Path
    manifest: dict
    models: dict[int, MILModel]

    @property
    def preprocess(self) -> PreprocessSettings:
        settings = self.manifest["preprocess"]
        return PreprocessSettings(
            image_size=settings["image_size"],
            clip_percentiles=tuple(settings["clip_percentiles"]),
            min_brain_fraction=settings["min_brain_fraction"],
        )

    @property
    def suffixes(self) -> dict[str, str]:
        return dict(self.manifest["input"]["suffixes"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"]["value"])

    @property
    def inference(self) -> InferenceSettings:
        return InferenceSettings(**self.manifest["inference"])

    @cached_property
    def training_content_hashes(self) -> frozenset[str]:
        """The content hash of every training subject's preprocessed slices (to recognise one when scored)."""
        return frozenset(self.manifest["training"]["subject_content_sha256"])


def pooled_inner_val_threshold(inner_val: pd.DataFrame) -> dict:
    """The decision threshold and how it was chosen, from every fold's inner-validation predictions.

    inner_val: one row per (fold, patient) with ``label`` (1 = HGG) and ``probability`` columns.
    """
    labels, probabilities = inner_val["label"].to_numpy(), inner_val["probability"].to_numpy()
    return {
        "value": round(youden_threshold(labels, probabilities), 6),
        "method": THRESHOLD_METHOD,
        "predictions": len(labels),
        "hgg": int(labels.sum()),
        "lgg": int(len(labels) - labels.sum()),
    }


def training_cohort(manifest: pd.DataFrame) -> dict:
    """Identity of the training cohort from the preprocess manifest: counts and a SHA-256 over every subject's
    id, label and slice-content hash (equal hashes: the same patients, preprocessed to the same slices)."""
    rows = manifest.sort_values("subject_id")
    lines = "".join(f"{s},{y},{h}\n" for s, y, h in zip(rows["subject_id"], rows["label"], rows["content_sha256"]))
    return {
        "cohort_sha256": hashlib.sha256(lines.encode()).hexdigest(),
        "subjects": len(rows),
        "hgg": int((rows["label"] == LABELS["HGG"]).sum()),
        "lgg": int((rows["label"] == LABELS["LGG"]).sum()),
        "subject_content_sha256": sorted(rows["content_sha256"]),
    }


def environment() -> dict:
    """Python and package versions of the process building the bundle."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def build_manifest(
    *,
    preprocess: PreprocessSettings,
    suffixes: dict[str, str],
    prediction: str,
    threshold: dict,
    inference: InferenceSettings,
    training: dict,
    params: dict,
) -> dict:
    """Everything but the model files (added by :func:`write_bundle`). ``params`` are the values that produced the
    models, recorded as they were read; ``prediction`` is the models' rule (:data:`gliomil.model.mil.PREDICTIONS`)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": "probability that a glioma is high grade (HGG) from pre-operative FLAIR, T1, T1ce and T2 MRI",
        "labels": {grade: LABELS[grade] for grade in GRADES},
        "input": {
            "modalities": list(MODALITIES),
            "suffixes": dict(suffixes),
            "files": "<case>_<suffix>.nii or .nii.gz, one per modality, skull-stripped and co-registered on one grid; "
            "the seg file is optional and used only to outline the tumour in montages",
        },
        "preprocess": {
            **asdict(preprocess),
            "orientation": "voxel axes reoriented to RAS+ (nibabel.io_orientation); axial slices along S",
            "normalisation": "per modality: clip to the percentiles of brain voxels, z-score over brain voxels",
            "brain": "voxels where any modality is non-zero",
            "stored_dtype": "float16",
        },
        "prediction": {
            "per_model": prediction,
            "ensemble": "mean of the fold models' HGG probabilities",
            "decision": "HGG when the ensemble probability >= threshold",
        },
        "threshold": threshold,
        "inference": asdict(inference),
        "training": training,
        "params": params,
        "code": code_version(),
        "environment": environment(),
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bundle(directory: str | Path, checkpoints: dict[int, Path], manifest: dict) -> None:
    """Write a bundle: copy each fold's checkpoint to ``fold_<k>.pt``, record its SHA-256 and epoch in the manifest.

    The folder appears complete or not at all (:func:`gliomil.runtime.files.atomic_directory`).
    """
    models = []
    with atomic_directory(directory) as tmp:
        for fold, checkpoint in sorted(checkpoints.items()):
            name = f"fold_{fold}.pt"
            write_bytes(tmp / name, Path(checkpoint).read_bytes())
            record = torch.load(tmp / name, map_location="cpu", weights_only=True)
            models.append({"fold": fold, "file": name, "sha256": file_sha256(tmp / name), "epoch": record["epoch"]})
        write_text(tmp / MANIFEST, json.dumps({**manifest, "models": models}, indent=2) + "\n")


#: What :func:`load_bundle` needs from a manifest, and of which type.
REQUIRED = {
    "labels": dict,
    "input.modalities": list,
    "input.suffixes": dict,
    "preprocess.image_size": int,
    "preprocess.clip_percentiles": list,
    "preprocess.min_brain_fraction": (int, float),
    "prediction.per_model": str,
    "threshold.value": (int, float),
    "inference.amp": bool,
    "inference.eval_chunk": int,
    "inference.threads": int,
    "training.cohort_sha256": str,
    "training.subject_content_sha256": list,
    "models": list,
}


def _field(manifest: dict, key: str, kind, path: Path):
    """The manifest's value at dotted ``key``; GliomilError (one line) if it is missing or not of ``kind``."""
    node = manifest
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise GliomilError(f"{path}: missing {key}")
        node = node[part]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(node, kinds) or (isinstance(node, bool) and bool not in kinds):
        raise GliomilError(f"{path}: {key} must be {' or '.join(k.__name__ for k in kinds)}, got {node!r}")
    return node


def _check_manifest(manifest, path: Path) -> None:
    """Everything scoring relies on is there, of the right type, and means what this code means by it."""
    if not isinstance(manifest, dict):
        raise GliomilError(f"{path}: a manifest is a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise GliomilError(
            f"{path}: not a {FORMAT} version {FORMAT_VERSION} manifest "
            f"(format {manifest.get('format')!r}, version {manifest.get('format_version')!r})"
        )
    for key, kind in REQUIRED.items():
        _field(manifest, key, kind, path)
    if manifest["labels"] != {grade: LABELS[grade] for grade in GRADES}:
        raise GliomilError(f"{path}: labels {manifest['labels']} differ from this code's {dict(LABELS)}")
    if manifest["input"]["modalities"] != list(MODALITIES):
        raise GliomilError(f"{path}: modalities {manifest['input']['modalities']} differ from {list(MODALITIES)}")
    missing = [key for key in SUFFIX_KEYS if not isinstance(manifest["input"]["suffixes"].get(key), str)]
    if missing:
        raise GliomilError(f"{path}: input.suffixes lacks {', '.join(missing)}")
    if not manifest["models"] or not all(
        isinstance(entry, dict) and {"fold", "file", "sha256"} <= set(entry) for entry in manifest["models"]
    ):
        raise GliomilError(f"{path}: models must list at least one {{fold, file, sha256}} entry")


def load_bundle(directory: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Read and check a bundle, its models on ``device``; every problem is a :class:`GliomilError` of one line
    naming the file."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise GliomilError(f"{path}: no bundle manifest here (a bundle is written by the bundle stage: `dvc repro`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GliomilError(f"{path}: not a valid manifest ({exc})") from None
    _check_manifest(manifest, path)
    models = {}
    for entry in manifest["models"]:
        file = directory / str(entry["file"])
        if not file.is_file():
            raise GliomilError(f"{file}: model file of fold {entry['fold']} is missing")
        if file_sha256(file) != entry["sha256"]:
            raise GliomilError(f"{file}: SHA-256 differs from the manifest's (corrupted or replaced)")
        try:
            model, _ = load_checkpoint(file, device)
        except (RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as exc:
            raise GliomilError(f"{file}: not a gliomil checkpoint ({' '.join(str(exc).split())[:200]})") from None
        if model.prediction != manifest["prediction"]["per_model"]:
            raise GliomilError(
                f"{file}: the model predicts by {model.prediction!r}, the manifest says "
                f"{manifest['prediction']['per_model']!r}"
            )
        models[int(entry["fold"])] = model
    return Bundle(directory, manifest, models)
