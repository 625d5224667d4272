"""Grade or scanner? The confound checks of a cohort's fingerprint, with their evidence and figures.

* **Site x grade** (:func:`site_findings`): every known site whose patients all have one grade is a warning, with
  the share of the cohort in such sites: there, a model that recognises the site knows the grade.
* **Nuisance AUC** (:func:`nuisance_aucs`): how well each acquisition property alone (voxel size, brain volume,
  the brain's raw intensity level per modality) ranks the grades. The AUC is read in whichever direction ranks
  better (``max(AUC, 1 - AUC)``: a property that is lower in HGG confounds as much as one that is higher), with
  its DeLong 95% interval (:func:`gliomil.evaluation.intervals.delong_auc_ci`). A property is flagged when that
  AUC is at least :data:`NUISANCE_WARNING_AUC` *and* its simultaneous interval (Bonferroni over the properties)
  excludes 0.5: a strong ranking that is not chance among the many properties looked at.

The figures: the acquisition properties by grade and by site (:func:`plot_acquisition`), and the QC grid of every
subject's thumbnail (:func:`plot_qc_grid`).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from gliomil.data.sites import UNKNOWN_SITE, site_grade_table  # noqa: E402
from gliomil.errors import GliomilError  # noqa: E402
from gliomil.evaluation.intervals import delong_auc_ci  # noqa: E402
from gliomil.runtime.files import write_with  # noqa: E402
from gliomil.vocabulary import GRADES, LABELS, MODALITIES  # noqa: E402

__all__ = [
    "NUISANCE_PROPERTIES",
    "NUISANCE_WARNING_AUC",
    "site_findings",
    "nuisance_aucs",
    "plot_acquisition",
    "plot_qc_grid",
]

#: Fingerprint columns that describe how a scan was acquired, not the tumour (:mod:`gliomil.data.fingerprint`).
NUISANCE_PROPERTIES = (
    "voxel_x_mm",
    "voxel_y_mm",
    "voxel_z_mm",
    "brain_ml",
    *(f"{modality}_p50" for modality in MODALITIES),
    *(f"{modality}_p99" for modality in MODALITIES),
)
#: A property that alone ranks the grades at least this well (and not by chance) is flagged.
NUISANCE_WARNING_AUC = 0.70


def site_findings(fingerprint: pd.DataFrame) -> dict:
    """The site x grade table of a fingerprint (columns ``site``, ``grade``) and what it warns of.

    Returns ``table`` (one record per site: site, LGG, HGG, total, single_grade), ``known_sites``,
    ``single_grade_sites`` (their names), ``share_in_single_grade_sites`` (of all patients) and ``warnings``
    (one sentence per single-grade site).
    """
    table = site_grade_table(fingerprint["site"], fingerprint["grade"])
    single = [str(site) for site in table.index[table["single_grade"]]]
    in_single = int(table.loc[single, "total"].sum()) if single else 0
    warnings = [
        f"site {site}: all {int(table.loc[site, 'total'])} patients are "
        f"{GRADES[int(table.loc[site, 'HGG'] > 0)]}: the site alone gives their grade"
        for site in single
    ]
    return {
        "table": [{"site": str(site), **{k: _plain(v) for k, v in row.items()}} for site, row in table.iterrows()],
        "known_sites": int(sum(site != UNKNOWN_SITE for site in table.index)),
        "single_grade_sites": single,
        "share_in_single_grade_sites": in_single / len(fingerprint),
        "warnings": warnings,
    }


def nuisance_aucs(fingerprint: pd.DataFrame, properties=NUISANCE_PROPERTIES, level: float = 0.95) -> pd.DataFrame:
    """Per acquisition property, how well it alone ranks HGG above LGG (module docstring).

    Columns: ``property``, ``auc`` (HGG scored by the property itself), ``direction`` ("higher in HGG", "lower in
    HGG" or "no difference"), ``ranking_auc`` (``max(auc, 1 - auc)``), its DeLong ``ci_low``/``ci_high`` at
    ``level``, the Bonferroni-simultaneous ``simultaneous_low`` over all properties, and ``flagged``.
    """
    labels = fingerprint["grade"].map(LABELS).to_numpy()
    counts = {grade: int((labels == label).sum()) for grade, label in LABELS.items()}
    if min(counts.values()) < 2:  # DeLong's variance needs two of each
        raise GliomilError(
            "the nuisance AUCs need at least 2 subjects of each grade; the cohort has "
            + " and ".join(f"{n} {grade}" for grade, n in counts.items())
        )
    simultaneous = 1.0 - (1.0 - level) / len(properties)
    rows = []
    for name in properties:
        values = fingerprint[name].to_numpy(dtype=np.float64)
        higher = delong_auc_ci(labels, values, level)
        oriented = values if higher.auc >= 0.5 else -values
        direction = "higher in HGG" if higher.auc > 0.5 else "lower in HGG" if higher.auc < 0.5 else "no difference"
        ci = delong_auc_ci(labels, oriented, level)
        joint = delong_auc_ci(labels, oriented, simultaneous)
        rows.append(
            {
                "property": name,
                "auc": higher.auc,
                "direction": direction,
                "ranking_auc": ci.auc,
                "ci_low": ci.ci_low,
                "ci_high": ci.ci_high,
                "simultaneous_low": joint.ci_low,
                "flagged": bool(ci.auc >= NUISANCE_WARNING_AUC and joint.ci_low > 0.5),
            }
        )
    return pd.DataFrame(rows)


def _plain(value):
    """numpy scalars as Python's, for JSON."""
    return value.item() if isinstance(value, np.generic) else value


# -- figures -----------------------------------------------------------------------------------------------------


def _save(fig, path: Path) -> None:
    try:
        write_with(path, lambda f: fig.savefig(f, format="png", dpi=80))
    finally:
        plt.close(fig)


def plot_acquisition(fingerprint: pd.DataFrame, nuisance: pd.DataFrame, path: Path) -> None:
    """One panel per acquisition property: its values by grade (points), titled with its ranking AUC; with more
    than one known site, the points are coloured by site."""
    names = list(nuisance["property"])
    columns, legend_columns = 4, 8
    rows = math.ceil(len(names) / columns)
    sites = sorted(set(fingerprint["site"]))
    colour_by_site = len([s for s in sites if s != UNKNOWN_SITE]) > 1
    # Fixed margins in inches (title above, the site legend's rows below): tight_layout measured every label's box
    # and cost half the fingerprint stage (0.36 s of 0.78 s at 285 subjects).
    top_in = 0.7
    bottom_in = 0.4 + (0.3 + 0.22 * math.ceil(len(sites) / legend_columns) if colour_by_site else 0.0)
    height = 2.6 * rows + top_in + bottom_in
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(3.2 * columns, height),
        squeeze=False,
        gridspec_kw=dict(
            left=0.06, right=0.98, bottom=bottom_in / height, top=1 - top_in / height, wspace=0.35, hspace=0.45
        ),
    )
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(fingerprint))
    x = fingerprint["grade"].map(LABELS).to_numpy() + jitter
    for ax, (_, row) in zip(axes.ravel(), nuisance.iterrows()):
        values = fingerprint[row["property"]].to_numpy(dtype=np.float64)
        if colour_by_site:
            for site in sites:
                where = (fingerprint["site"] == site).to_numpy()
                ax.scatter(x[where], values[where], s=6, label=site)
        else:
            ax.scatter(x, values, s=6, color="#3b6ea5")
        flag = " (flagged)" if row["flagged"] else ""
        ax.set_title(f"{row['property']}: AUC {row['ranking_auc']:.2f}{flag}", fontsize=9)
        ax.set_xticks([0, 1], list(GRADES))
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    if colour_by_site:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", fontsize=7, ncol=min(len(labels), legend_columns), title="site")
    fig.suptitle(
        "Acquisition properties by grade (ranking AUC: how well the property alone ranks the grades)",
        y=1 - 0.15 / height,
    )
    _save(fig, path)


def plot_qc_grid(thumbnails: np.ndarray, captions: list[str], path: Path, columns: int = 12, zoom: int = 2) -> None:
    """Every subject's QC thumbnail (FLAIR | T1ce, :func:`gliomil.data.fingerprint.qc_thumbnail`; float (N, h, w)
    in [0, 1], NaN-padded) in one grey-level PNG, each ``zoom`` times enlarged and captioned (id, grade, site), so
    that an empty, dark or mis-registered case stands out at a glance.

    Drawn with Pillow, pixel for pixel: matplotlib resampled the mosaic onto its figure and took ten times longer
    (3 s for 285 subjects here, against preprocess's 15 s)."""
    count, height, width = thumbnails.shape
    rows = math.ceil(count / columns)
    cell_h, cell_w, title = height * zoom + 26, width * zoom + 6, 18
    canvas = np.full((title + rows * cell_h, columns * cell_w), 255, dtype=np.uint8)
    grey = np.where(np.isnan(thumbnails), 1.0, thumbnails.astype(np.float32))
    grey = (np.clip(grey, 0, 1) * 255).round().astype(np.uint8).repeat(zoom, axis=1).repeat(zoom, axis=2)
    for k in range(count):
        top, left = title + (k // columns) * cell_h, (k % columns) * cell_w
        canvas[top : top + height * zoom, left : left + width * zoom] = grey[k]
    image = Image.fromarray(canvas, mode="L")
    draw = ImageDraw.Draw(image)
    draw.text((4, 3), "QC: FLAIR | T1ce on each subject's slice with the most tumour", fill=0)
    for k, caption in enumerate(captions):
        top, left = title + (k // columns) * cell_h, (k % columns) * cell_w
        draw.text((left + 1, top + height * zoom + 1), caption, fill=0, spacing=1)
    write_with(path, lambda f: image.save(f, format="png"))
