"""gliomil predict and the packaged model: every input kind, storage convention and bad input, on a tiny bundle."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tool_env

from gliomil.data.brats import find_cases
from gliomil.data.preprocess import PreprocessSettings, preprocess_volumes
from gliomil.errors import GliomilError, InputError
from gliomil.evaluation.metrics import youden_threshold
from gliomil.model.checkpoint import load_checkpoint, save_checkpoint
from gliomil.model.mil import ModelConfig
from gliomil.serving.bundle import (
    InferenceSettings,
    build_manifest,
    load_bundle,
    pooled_inner_val_threshold,
    training_cohort,
    write_bundle,
)
from gliomil.serving.predict import COLUMNS, main
from gliomil.synthetic.cohort import subject_seed, synthesize_subject
from gliomil.vocabulary import MODALITIES

SHAPE = (32, 32, 24)
KEYS = (*MODALITIES, "seg")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A bundle of three randomly initialised tiny fold models."""
    return make_bundle(tmp_path_factory.mktemp("bundle"), ModelConfig(width=4, depth=2, prediction="both_streams"))


def make_bundle(work: Path, config: ModelConfig, prepare=None) -> Path:
    """A bundle of three fold models of ``config``, each passed to ``prepare`` (when given) before it is saved."""
    checkpoints = {}
    for fold in range(3):
        torch.manual_seed(fold)
        checkpoints[fold] = work / f"best_{fold}.pt"
        model = config.build()
        if prepare is not None:
            prepare(model)
        save_checkpoint(model, config, checkpoints[fold], fold=fold, epoch=fold + 1)
    cohort = pd.DataFrame({"subject_id": ["a", "b"], "label": [1, 0], "content_sha256": ["0" * 64, "1" * 64]})
    manifest = build_manifest(
        preprocess=PreprocessSettings(image_size=16),
        suffixes={key: key for key in KEYS},
        prediction=config.prediction,
        threshold={"value": 0.5, "method": "test"},
        inference=InferenceSettings(amp=False, eval_chunk=64, threads=1),
        training=training_cohort(cohort),
        params={"seed": 1},
    )
    write_bundle(work / "bundle", checkpoints, manifest)
    return work / "bundle"


@pytest.fixture(scope="module")
def volumes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two synthetic patients (images float32 (4, X, Y, Z) of even whole numbers, seg uint8), RAS."""
    cases = {}
    for grade, number in (("HGG", 1), ("LGG", 1)):
        images, seg = synthesize_subject(grade, SHAPE, np.random.default_rng(subject_seed(3, grade, number)))
        cases[f"{grade}_{number}"] = (2 * np.rint(images / 2), seg)
    return cases


def write_case(folder: Path, case: str, images, seg, *, ext=".nii.gz", affine=None, dtype=np.float32, slope=None):
    """``<folder>/<case>_<key><ext>`` for the four modalities (stored as ``dtype``, divided by ``slope`` when
    given) and the seg (omitted when None)."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.eye(4) if affine is None else affine
    for key, data in zip(MODALITIES, images):
        image = nib.Nifti1Image((data / (slope or 1)).astype(dtype), affine)
        if slope:
            image.header.set_slope_inter(slope, 0.0)
        nib.save(image, folder / f"{case}_{key}{ext}")
    if seg is not None:
        nib.save(nib.Nifti1Image(seg, affine), folder / f"{case}_seg{ext}")
    return folder


def predict(args: list, out: Path) -> pd.DataFrame:
    main([*map(str, args), "--out", str(out)])
    return pd.read_csv(out / "predictions.csv", dtype={"subject_id": str, "grade": str})


def probability_of(table: pd.DataFrame, case: str) -> float:
    return float(table.set_index("subject_id").loc[case, "probability"])


# -- inputs ---------------------------------------------------------------------------------------------


def test_every_layout_gives_the_same_probabilities(tmp_path, bundle_dir, volumes):
    (hgg, hgg_seg), (lgg, lgg_seg) = volumes["HGG_1"], volumes["LGG_1"]
    b = ["--bundle", bundle_dir]

    brats2018 = tmp_path / "brats2018"
    write_case(brats2018 / "HGG" / "P1", "P1", hgg, hgg_seg)
    write_case(brats2018 / "LGG" / "P2", "P2", lgg, lgg_seg)
    reference = predict([brats2018, *b], tmp_path / "out2018")
    assert list(reference["grade"]) == ["HGG", "LGG"] and list(reference["subject_id"]) == ["P1", "P2"]

    brats2020 = tmp_path / "brats2020"
    write_case(brats2020 / "P1", "P1", hgg, hgg_seg)
    write_case(brats2020 / "P2", "P2", lgg, None)  # no seg: allowed when predicting
    (brats2020 / "name_mapping.csv").write_text(
        "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2019_subject_ID,"
        "BraTS_2020_subject_ID\nHGG,,,,,P1\nLGG,,,,,P2\n"
    )
    csv_tree = tmp_path / "csv"
    write_case(csv_tree / "P1", "P1", hgg, hgg_seg, ext=".nii")
    write_case(csv_tree / "P2", "P2", lgg, lgg_seg, ext=".nii")
    (csv_tree / "labels.csv").write_text("subject_id,grade\nP1,HGG\nP2,LGG\n")
    unlabelled = tmp_path / "cases"
    write_case(unlabelled / "P1", "P1", hgg, None)
    write_case(unlabelled / "P2", "P2", lgg, None)
    loose = tmp_path / "loose"
    write_case(loose, "P1", hgg, None)
    write_case(loose, "P2", lgg, None)

    for name, root in (("2020", brats2020), ("csv", csv_tree), ("cases", unlabelled), ("loose", loose)):
        table = predict([root, *b], tmp_path / f"out_{name}")
        pd.testing.assert_series_equal(table["probability"], reference["probability"])
        assert list(table["subject_id"]) == ["P1", "P2"]
        assert list(table["grade"].fillna("")) == (["HGG", "LGG"] if name in ("2020", "csv") else ["", ""])

    single = predict([unlabelled / "P2", *b], tmp_path / "out_single")  # one case folder, no seg
    assert probability_of(single, "P2") == probability_of(reference, "P2")
    files = [arg for key in MODALITIES for arg in (f"--{key}", loose / f"P1_{key}.nii.gz")]
    four = predict([*files, *b], tmp_path / "out_four")
    assert list(four["subject_id"]) == ["P1"] and probability_of(four, "P1") == probability_of(reference, "P1")


def test_storage_conventions_do_not_change_the_prediction(tmp_path, bundle_dir, volumes):
    images, seg = volumes["HGG_1"]
    b = ["--bundle", bundle_dir]
    reference = predict([write_case(tmp_path / "ras", "X", images, seg), *b], tmp_path / "o1")

    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    las[0, 3] = SHAPE[0] - 1  # the same world positions, x stored right to left
    flipped = write_case(tmp_path / "las", "X", images[:, ::-1], seg[::-1], affine=las, ext=".nii")
    int16 = write_case(tmp_path / "int16", "X", images, seg, dtype=np.int16, slope=2.0)  # int16 with scl_slope
    inferior_first = np.diag([1.0, 1.0, -1.0, 1.0])
    inferior_first[2, 3] = SHAPE[2] - 1
    z_flipped = write_case(tmp_path / "z", "X", images[..., ::-1], seg[..., ::-1], affine=inferior_first)
    assert nib.load(int16 / "X_t1.nii.gz").get_data_dtype() == np.int16

    for folder in (flipped, int16, z_flipped):
        table = predict([folder, *b], tmp_path / f"out_{folder.name}")
        assert table["probability"].iloc[0] == reference["probability"].iloc[0], folder.name
        assert table["n_slices"].iloc[0] == reference["n_slices"].iloc[0]
    # Slices are numbered as the input file stores them: reversed along a reversed axial axis.
    reversed_z = predict([z_flipped, *b], tmp_path / "out_z2")
    assert reversed_z["critical_slice"].iloc[0] == SHAPE[2] - 1 - reference["critical_slice"].iloc[0]
    assert reversed_z["most_attended_slices"].iloc[0] == " ".join(
        str(SHAPE[2] - 1 - int(z)) for z in reference["most_attended_slices"].iloc[0].split()
    )


def test_real_size_case_matches_scoring_its_volumes_directly(tmp_path, bundle_dir):
    images, seg = synthesize_subject("LGG", (240, 240, 155), np.random.default_rng(subject_seed(3, "LGG", 2)))
    folder = write_case(tmp_path / "big", "BIG", images, seg, dtype=np.int16)
    row = predict([folder, "--bundle", bundle_dir], tmp_path / "out").iloc[0]
    stored = images.astype(np.int16).astype(np.float32)  # what the int16 files hold

    # Kept slices by hand: brain = any modality non-zero; the in-plane square is the brain's bounding box's
    # longer side; a slice is kept when its brain covers >= 10% (min_brain_fraction) of that square.
    brain = (stored != 0).any(axis=0)
    xs, ys = np.flatnonzero(brain.any(axis=(1, 2))), np.flatnonzero(brain.any(axis=(0, 2)))
    side = max(xs[-1] - xs[0] + 1, ys[-1] - ys[0] + 1)
    kept = [z for z in range(155) if brain[:, :, z].sum() / side**2 >= 0.1]
    assert row["n_slices"] == len(kept) and 60 <= len(kept) <= 155

    # Every fold model scores the in-memory volumes' bag (no file reading): both streams' sigmoids averaged per
    # model, then over the models; the critical slice is the highest mean instance probability.
    bag = preprocess_volumes(SimpleNamespace(images=stored, seg=seg), PreprocessSettings(image_size=16))
    assert bag.z_index.tolist() == kept
    probabilities, instance = [], []
    for fold in range(3):
        model, _ = load_checkpoint(bundle_dir / f"fold_{fold}.pt")
        out = model.score_bag(torch.from_numpy(bag.slices.astype(np.float32)), chunk=64)
        probabilities.append((torch.sigmoid(out.bag_logits) + torch.sigmoid(out.max_instance_logits)).item() / 2)
        instance.append(torch.sigmoid(out.instance_logits).double().numpy())
    for fold, expected in enumerate(probabilities):
        assert row[f"probability_fold_{fold}"] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert row["probability"] == pytest.approx(np.mean(probabilities), rel=1e-5, abs=1e-7)
    assert row["critical_slice"] == kept[int(np.argmax(np.mean(instance, axis=0)))]


def test_outputs_columns_json_and_montage(tmp_path, bundle_dir, volumes):
    images, seg = volumes["HGG_1"]
    table = predict([write_case(tmp_path / "c", "C", images, seg), "--bundle", bundle_dir], tmp_path / "out")
    row = table.iloc[0]
    folds = [row[f"probability_fold_{k}"] for k in range(3)]
    assert row["probability"] == pytest.approx(np.mean(folds), abs=1e-6)
    assert row["decision"] == ("HGG" if row["probability"] >= 0.5 else "LGG")
    assert row["fold_agreement"] == pytest.approx(np.mean([(p >= 0.5) == (row["decision"] == "HGG") for p in folds]))
    assert len(row["most_attended_slices"].split()) == 3 and not row["in_training_cohort"]
    documented = {c for c in COLUMNS if "<k>" not in c} | {f"probability_fold_{k}" for k in range(3)}
    assert set(table.columns) == documented
    document = json.loads((tmp_path / "out/predictions.json").read_text())
    assert document["predictions"][0]["subject_id"] == "C" and document["bundle"]["folds"] == [0, 1, 2]
    montage = tmp_path / "out" / row["montage"]
    assert montage.is_file() and montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("aggregator", ["mean", "max", "abmil"])
def test_other_aggregators_leave_empty_what_they_do_not_have(tmp_path, volumes, aggregator):
    bundle = make_bundle(tmp_path / "b", ModelConfig(width=4, depth=2, aggregator=aggregator, prediction="bag_stream"))
    images, seg = volumes["HGG_1"]
    table = predict([write_case(tmp_path / "c", "C", images, seg), "--bundle", bundle], tmp_path / "out")
    row = table.iloc[0]
    assert 0.0 <= row["probability"] <= 1.0
    assert pd.isna(row["critical_slice"]) == (aggregator == "abmil")  # no instance scores
    assert pd.isna(row["most_attended_slices"]) == (aggregator != "abmil")  # no attention
    assert pd.isna(row["montage"])  # the montage shows attention and instance scores: only DSMIL has both
    assert not (tmp_path / "out" / "montages" / "C.png").exists()


def test_a_tumour_moments_bundle_predicts_from_the_images_alone(tmp_path, volumes):
    def trained(model):  # a stream that reads the moments: an untrained one adds nothing
        with torch.no_grad():
            model.moments.classifier.weight.fill_(0.2)

    config = ModelConfig(width=4, depth=2, prediction="both_streams", tumour_head=1, tumour_moments=True)
    bundle = make_bundle(tmp_path / "b", config, trained)
    untrained = make_bundle(tmp_path / "u", config)
    images, seg = volumes["HGG_1"]
    with_seg = predict([write_case(tmp_path / "c", "C", images, seg), "--bundle", bundle], tmp_path / "out")
    without = predict([write_case(tmp_path / "n", "C", images, None), "--bundle", bundle], tmp_path / "out_n")
    assert probability_of(with_seg, "C") == probability_of(without, "C")  # the seg is never read
    plain = predict([tmp_path / "c", "--bundle", untrained], tmp_path / "out_u")
    assert probability_of(plain, "C") != probability_of(with_seg, "C")  # the stream's weights count


def test_out_folder_is_never_overwritten_unasked(tmp_path, bundle_dir, volumes):
    images, seg = volumes["LGG_1"]
    case = write_case(tmp_path / "c", "C", images, seg)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(GliomilError, match="already exists and is not empty"):
        main([str(case), "--bundle", str(bundle_dir), "--out", str(out)])
    main([str(case), "--bundle", str(bundle_dir), "--out", str(out), "--overwrite", "--no-montage"])
    assert not (out / "keep.txt").exists() and not (out / "montages").exists()


# -- bad input ------------------------------------------------------------------------------------------


def _break(folder: Path, problem: str, case: str = "X") -> tuple[Path, str]:
    """Damage ``case`` in ``folder``; return the file the error must name and words of its problem."""
    t1 = folder / f"{case}_t1.nii.gz"
    if problem == "missing modality":
        t1.unlink()
        return t1, "missing t1 file"
    if problem == "shape mismatch":
        nib.save(nib.Nifti1Image(np.ones((32, 32, 23), np.float32), np.eye(4)), t1)
        return t1, "differs from flair's"
    if problem == "not NIfTI":
        t1.write_bytes(b"this is not an image")
        return t1, "cannot read as NIfTI"
    if problem == "4D":
        nib.save(nib.Nifti1Image(np.ones((*SHAPE, 2), np.float32), np.eye(4)), t1)
        return t1, "is not a 3D volume"
    if problem == "NaN":
        data = np.ones(SHAPE, np.float32)
        data[3, 4, 5] = np.nan
        nib.save(nib.Nifti1Image(data, np.eye(4)), t1)
        return t1, "NaN or infinite"
    assert problem == "empty brain"
    for key in MODALITIES:
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), folder / f"{case}_{key}.nii.gz")
    return folder / f"{case}_flair.nii.gz", "empty brain mask"


PROBLEMS = ("missing modality", "shape mismatch", "not NIfTI", "4D", "NaN", "empty brain")


@pytest.mark.parametrize("problem", PROBLEMS)
def test_bad_input_is_one_line_naming_case_and_file_and_writes_nothing(tmp_path, bundle_dir, volumes, problem):
    images, seg = volumes["HGG_1"]
    folder = write_case(tmp_path / "X", "X", images, None)
    path, words = _break(folder, problem)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=re.escape(words)) as caught:
        main([str(folder), "--bundle", str(bundle_dir), "--out", str(out)])
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"X: {path}: ") and words in message
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_on_error_skip_lists_every_bad_case(tmp_path, bundle_dir, volumes):
    images, seg = volumes["HGG_1"]
    root = tmp_path / "cases"
    write_case(root / "good", "good", images, seg)
    expected = {}
    for n, problem in enumerate(PROBLEMS):
        case = f"bad{n}"
        expected[case] = _break(write_case(root / case, case, images, None), problem, case)[1]
    result = subprocess.run(
        [sys.executable, "-m", "gliomil.serving.predict", root, "--bundle", bundle_dir, "--out", tmp_path / "out"]
        + ["--on-error", "skip"],
        capture_output=True,
        text=True,
        env=tool_env(),
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "out/predictions.csv")
    assert list(table["subject_id"]) == ["good"]
    skipped = pd.read_csv(tmp_path / "out/skipped.csv")
    assert list(skipped["subject_id"]) == list(expected)
    for reason, words in zip(skipped["reason"], expected.values()):
        assert words in reason
    assert result.stdout.count("skipped ") == len(PROBLEMS)


def test_console_command_and_its_one_line_error(tmp_path, bundle_dir, volumes):
    gliomil = Path(sys.executable).parent / "gliomil"
    images, seg = volumes["LGG_1"]
    case = write_case(tmp_path / "c", "C", images, seg)
    ok = subprocess.run(
        [gliomil, "predict", case, "--bundle", bundle_dir, "--out", tmp_path / "o"],
        text=True,
        capture_output=True,
        env=tool_env(),
    )
    assert ok.returncode == 0 and "predict: 1 of 1 case(s) scored" in ok.stdout, ok.stderr
    (case / "C_t2.nii.gz").write_bytes(b"broken")
    bad = subprocess.run(
        [gliomil, "predict", case, "--bundle", bundle_dir, "--out", tmp_path / "o2"],
        text=True,
        capture_output=True,
        env=tool_env(),
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith(f"error: C: {case / 'C_t2.nii.gz'}: cannot read as NIfTI")


def test_find_cases_needs_something_to_score(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GliomilError, match="no cases in"):
        find_cases(tmp_path / "empty")


# -- the bundle -----------------------------------------------------------------------------------------


def test_bundle_copied_elsewhere_predicts_the_same(tmp_path, bundle_dir, volumes):
    images, seg = volumes["HGG_1"]
    case = write_case(tmp_path / "c", "C", images, seg)
    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(bundle_dir, copy)
    here = predict([case, "--bundle", bundle_dir], tmp_path / "o1")
    there = predict([case, "--bundle", copy], tmp_path / "o2")
    pd.testing.assert_frame_equal(here, there)


def test_bundle_files_load_with_weights_only_and_corruption_is_caught(tmp_path, bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["labels"] == {"LGG": 0, "HGG": 1} and manifest["input"]["modalities"] == list(MODALITIES)
    assert {"value", "method"} <= set(manifest["threshold"]) and manifest["preprocess"]["image_size"] == 16
    assert {"torch", "numpy", "python"} <= set(manifest["environment"]) and manifest["code"]["source_sha256"]
    for entry in manifest["models"]:
        record = torch.load(bundle_dir / entry["file"], weights_only=True)
        assert record["fold"] == entry["fold"] and record["epoch"] == entry["epoch"]
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    data = bytearray((copy / "fold_1.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "fold_1.pt").write_bytes(bytes(data))
    with pytest.raises(GliomilError, match="fold_1.pt: SHA-256 differs"):
        load_bundle(copy)
    with pytest.raises(GliomilError, match="no bundle manifest"):
        load_bundle(tmp_path)


def test_threshold_is_youden_on_the_pooled_inner_validation_predictions():
    inner = pd.DataFrame({"label": [0, 0, 1, 1, 0, 1], "probability": [0.1, 0.4, 0.35, 0.8, 0.2, 0.9], "fold": 0})
    chosen = pooled_inner_val_threshold(inner)
    assert chosen["value"] == youden_threshold(inner["label"].to_numpy(), inner["probability"].to_numpy()) == 0.35
    assert (chosen["hgg"], chosen["lgg"], chosen["predictions"]) == (3, 3, 6) and "inner-validation" in chosen["method"]


def test_training_cohort_hash_depends_on_every_patient():
    rows = pd.DataFrame({"subject_id": ["b", "a"], "label": [1, 0], "content_sha256": ["x", "y"]})
    first = training_cohort(rows)
    assert first == training_cohort(rows.iloc[::-1]) and (first["hgg"], first["lgg"]) == (1, 1)
    changed = rows.assign(content_sha256=["x", "z"])
    assert training_cohort(changed)["cohort_sha256"] != first["cohort_sha256"]


def test_the_predict_docs_document_every_output_column():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "predict.md").read_text()
    for column, meaning in COLUMNS.items():
        assert f"| `{column}` | {meaning} |" in docs, column


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda m: m.pop("threshold"), "missing threshold.value"),
        (lambda m: m["inference"].update(amp="yes"), "inference.amp must be bool"),
        (lambda m: m.update(labels={"LGG": 1, "HGG": 0}), "labels"),
        (lambda m: m["input"].update(modalities=["t1", "t2"]), "modalities"),
        (lambda m: m["prediction"].update(per_model="bag_stream"), "the model predicts by 'both_streams'"),
        (lambda m: m.update(models=[]), "models must list"),
    ],
)
def test_a_broken_manifest_is_one_line(tmp_path, bundle_dir, damage, words):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    damage(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GliomilError, match=re.escape(words)) as caught:
        load_bundle(copy)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    (copy / "manifest.json").write_text("[1, 2]")
    with pytest.raises(GliomilError, match="a manifest is a JSON object"):
        load_bundle(copy)


def test_out_folder_must_not_replace_or_hold_the_input_or_the_bundle(tmp_path, bundle_dir, volumes):
    images, seg = volumes["LGG_1"]
    case = write_case(tmp_path / "cases" / "C", "C", images, seg)
    for out in (case, tmp_path / "cases", case / "predictions", bundle_dir):
        with pytest.raises(GliomilError, match="--out must be a new folder outside"):
            main([str(case), "--bundle", str(bundle_dir), "--out", str(out), "--overwrite"])
    assert (case / "C_flair.nii.gz").is_file() and (bundle_dir / "manifest.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(GliomilError, match="is a file"):
        main([str(case), "--bundle", str(bundle_dir), "--out", str(tmp_path / "file")])
    files = [arg for key in MODALITIES for arg in (f"--{key}", case / f"C_{key}.nii.gz")]
    with pytest.raises(GliomilError, match="is not a plain folder name"):
        main([*map(str, files), "--case-id", "../escaped", "--bundle", str(bundle_dir), "--out", str(tmp_path / "o")])


def test_labels_csv_without_grades_lists_cases_to_score(tmp_path, bundle_dir, volumes):
    images, seg = volumes["HGG_1"]
    root = tmp_path / "tree"
    write_case(root / "A", "A", images, None)
    (root / "labels.csv").write_text("subject_id\nA\n")
    table = predict([root, "--bundle", bundle_dir], tmp_path / "out")
    assert list(table["subject_id"]) == ["A"] and table["grade"].isna().all()
