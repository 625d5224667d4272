"""The baselines: hand-made features, per-fold logistic regressions on the pipeline's folds, the model against them."""

import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gliomil.baselines import logistic
from gliomil.baselines.features import (
    PERCENTILES,
    feature_table,
    seg_statistics,
    seg_statistics_names,
    whole_brain,
    whole_brain_names,
)
from gliomil.data.folds import FoldSplit
from gliomil.errors import GliomilError, InputError
from gliomil.evaluation.aggregate import against_baselines, headline


def one_case():
    """Images (4, 2, 2, 2): flair 1..8 (every voxel brain); t1, t1ce, t2 multiples of it; a seg on 3 voxels."""
    base = np.arange(1.0, 9.0).reshape(2, 2, 2)
    images = np.stack([base, 2 * base, 10 + base, base**2]).astype(np.float32)
    seg = np.zeros((2, 2, 2), dtype=np.uint8)
    seg.flat[[5, 6, 7]] = [1, 4, 4]  # flair values 6, 7, 8
    return images, seg


def test_whole_brain_features_by_hand():
    images, _ = one_case()
    features = dict(zip(whole_brain_names(), whole_brain(images)))
    assert len(features) == 4 * len(PERCENTILES) + 4 * 2 + 1
    sd = math.sqrt(5.25)  # population sd of 1..8
    assert features["flair_p50"] == pytest.approx(0.0, abs=1e-12)  # median 4.5 is the mean
    assert features["flair_p1"] == pytest.approx((1.07 - 4.5) / sd)  # numpy's linear rule: 1 + 0.01 * 7 * 1
    assert features["flair_p99.9"] == pytest.approx((7.993 - 4.5) / sd)
    # z-scoring removes gain and offset: t1 = 2 flair and t1ce = 10 + flair give flair's features
    assert features["t1_p25"] == pytest.approx(features["flair_p25"]) == pytest.approx(features["t1ce_p25"])
    assert features["flair_above_2sd"] == 0.0  # the largest z is (8 - 4.5) / 2.29 = 1.53
    # t2 = 1, 4, ..., 64: mean 25.5, population sd sqrt(1096.5 - 25.5^2) = 21.12, so 64 lies 1.82 sd above
    assert features["t2_p99.9"] == pytest.approx((63.895 - 25.5) / math.sqrt(446.25))  # 49 + 0.993 * 15
    assert features["t2_above_2sd"] == 0.0
    assert features["log_brain_voxels"] == pytest.approx(math.log(8))


def test_seg_statistics_features_by_hand():
    images, seg = one_case()
    features = dict(zip(seg_statistics_names(), seg_statistics(images, seg)))
    sd = math.sqrt(5.25)
    z = (np.array([6.0, 7.0, 8.0]) - 4.5) / sd
    assert features["flair_tumour_mean"] == pytest.approx(z.mean())
    assert features["flair_tumour_std"] == pytest.approx(math.sqrt(2 / 3) / sd)
    assert features["flair_tumour_p50"] == pytest.approx((7 - 4.5) / sd)
    assert (features["share_label_1"], features["share_label_2"], features["share_label_4"]) == pytest.approx(
        (1 / 3, 0.0, 2 / 3)
    )
    assert features["log_tumour_voxels"] == pytest.approx(math.log(3))
    with pytest.raises(ValueError, match="no tumour voxel"):
        seg_statistics(images, np.zeros_like(seg))


def _splits(ids: list[str], k: int = 3) -> list[FoldSplit]:
    """k folds over ids: fold f tests ids[f::k], holds back the next fold's as inner validation."""
    parts = [ids[f::k] for f in range(k)]
    return [
        FoldSplit(f, [s for g in range(k) if g not in (f, (f + 1) % k) for s in parts[g]], parts[(f + 1) % k], parts[f])
        for f in range(k)
    ]


def _table(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = np.array([1, 0] * (n // 2))
    table = pd.DataFrame({"subject_id": [f"S{i:02d}" for i in range(n)], "label": labels})
    for names in (whole_brain_names(), seg_statistics_names()):
        for name in names:
            table[name] = rng.normal(size=n) + (0.8 * labels if name.startswith("flair") else 0)
    return table


def test_fold_predictions_fit_on_each_folds_training_patients_and_score_its_held_out_ones(monkeypatch):
    table = _table()
    table["flair_p50"] = np.arange(len(table), dtype=float)  # a feature that names the subject
    splits = _splits(list(table["subject_id"]))
    seen = []
    fit = logistic.fit_predict

    def spy(train_x, train_y, test_x):
        seen.append(
            (set(train_x[:, whole_brain_names().index("flair_p50")].astype(int)), set(test_x[:, 4].astype(int)))
        )
        return fit(train_x, train_y, test_x)

    monkeypatch.setattr(logistic, "fit_predict", spy)
    predictions = logistic.fold_predictions(table, splits)
    assert list(predictions["baseline"].unique()) == list(logistic.BASELINES)
    for name in logistic.BASELINES:
        rows = predictions[predictions["baseline"] == name]
        for split in splits:
            assert list(rows.loc[rows["fold"] == split.fold, "subject_id"]) == split.test
    index = {s: i for i, s in enumerate(table["subject_id"])}
    for (trained, _), split in zip(seen[: len(splits)], splits):  # the whole-brain fits, fold by fold
        assert trained == {index[s] for s in split.train + split.inner_val}
        assert not trained & {index[s] for s in split.test}  # no held-out patient in any fit
    assert predictions["probability"].between(0, 1).all()


def test_fold_predictions_refuse_subjects_without_features():
    table = _table()
    splits = _splits([*table["subject_id"], "S99"])
    with pytest.raises(GliomilError, match=r"subjects \['S99'\] of the split have no features"):
        logistic.fold_predictions(table, splits)


def test_the_model_against_a_baseline_is_delongs_paired_test_with_procs_numbers(asah):
    labels, markers = asah
    ids = [f"P{i:03d}" for i in range(len(labels))]
    model = pd.DataFrame({"subject_id": ids, "label": labels, "probability": markers["wfns"]})
    baseline = pd.DataFrame({"baseline": "whole_brain", "subject_id": ids[::-1], "label": labels[::-1]})
    baseline["probability"] = markers["s100b"][::-1]  # another row order: paired by subject, not by position
    test = against_baselines(model, baseline)["whole_brain"]
    # pROC: roc.test(wfns, s100b, method="delong"), tests/data/README.md
    assert test["difference"] == pytest.approx(0.823678861788618 - 0.731368563685637, abs=1e-9)
    assert test["z"] == pytest.approx(2.20898359144091, abs=1e-6)
    assert test["p"] == pytest.approx(0.0271757822291882, abs=1e-6)
    assert (test["ci_low"], test["ci_high"]) == pytest.approx((0.0104061769564846, 0.174214419249478), abs=1e-6)
    assert test["patients"] == 113
    summary = {
        "pooled": {"auc": 0.8, "ci_low": 0.7, "ci_high": 0.9},
        "pooled_inner_val": {"auc": 0.8},
        "status_at_0.5": {"Critical": 0, "Needs improvement": 1},
        "baselines": {"whole_brain": test},
    }
    numbers = headline(summary, {"balanced_accuracy": 0.7, "sensitivity": 0.6, "specificity": 0.8})
    assert numbers["whole_brain_auc"] == pytest.approx(0.731368563685637)
    assert numbers["auc_minus_whole_brain"] == pytest.approx(test["difference"])


def test_a_baseline_of_other_patients_is_not_paired(asah):
    labels, markers = asah
    ids = [f"P{i:03d}" for i in range(len(labels))]
    model = pd.DataFrame({"subject_id": ids, "label": labels, "probability": markers["wfns"]})
    baseline = pd.DataFrame({"baseline": "seg_statistics", "subject_id": ids[1:], "label": labels[1:]})
    baseline["probability"] = markers["s100b"][1:]
    with pytest.raises(ValueError, match="baseline seg_statistics scored other patients than the model"):
        against_baselines(model, baseline)


def _write_case(folder, name, images, seg):
    files = {}
    for key, volume in zip(("flair", "t1", "t1ce", "t2", "seg"), [*images, seg]):
        path = folder / f"{name}_{key}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(volume), np.eye(4)), path)
        files[key] = path
    return files


def test_feature_table_reads_the_manifests_files_and_names_a_case_without_tumour(tmp_path):
    images, seg = one_case()
    good = _write_case(tmp_path, "A", images, seg)
    empty = _write_case(tmp_path, "B", images, np.zeros_like(seg))
    manifest = pd.DataFrame(
        {
            "subject_id": ["A", "B"],
            "label": [1, 0],
            "source_files": [";".join(str(p) for p in files.values()) for files in (good, empty)],
        }
    )
    table = feature_table(manifest.iloc[:1])
    assert list(table.columns[:2]) == ["subject_id", "label"]
    np.testing.assert_allclose(table.loc[0, whole_brain_names()].to_numpy(float), whole_brain(images), rtol=1e-12)
    with pytest.raises(InputError, match=r"^B: .*B_seg\.nii\.gz: the segmentation holds no tumour voxel$"):
        feature_table(manifest)
