"""Synthetic BraTS-style cohort: skull-stripped multi-modal brain MRI of gliomas on real anatomy.

The normal brain is the MNI152 2009 template, warped per patient (:mod:`gliomil.synthetic.anatomy`); a
glioma of either grade grows in its white matter, displacing and infiltrating the tissue around
it; four MRI contrasts are rendered from the tissue fractions with a bias field, Rician noise and
a scanner gain per patient. The cohort is written in the BraTS 2018 layout::

    <out_dir>/HGG/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz
    <out_dir>/LGG/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz

with cases named ``SynBraTS_HGG_001``, ``SynBraTS_LGG_001``, ... stored as BraTS stores its files:
images int16 with intensities in the thousands, the segmentation uint8 with the BraTS labels 0
background, 1 necrotic / non-enhancing core, 2 edema, 4 enhancing tumour, LPS voxel order with the
affine ``diag(-1, -1, 1)`` and offset (0, 239, 0) (scaled by the voxel size), qform and sform code 1.
Every volume covers the same 240 x 240 x 155 mm field of view (BraTS' SRI24 box), so the voxel size
is that field of view divided by the array shape.

Conventions used throughout:

* Arrays in memory are indexed (x, y, z) = (left->right, posterior->anterior, inferior->superior),
  i.e. RAS; only :func:`write_case` turns them into BraTS' LPS order. World coordinates are
  millimetres with the origin at the centre of the field of view.
* Every random field is drawn on a node grid fixed in millimetres and evaluated at the
  voxel centres, and every random draw except the final image noise happens before the
  array shape matters. A given generator state therefore describes the same patient at
  any resolution; only sampling and noise change with the shape.
* Each subject draws from its own child seed
  ``SeedSequence([seed, SEED_GRADE_ORDER.index(grade), number])``,
  so subject k is the same whatever the cohort size or the number of worker processes.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.special import ndtri
from threadpoolctl import threadpool_limits

from gliomil.errors import GliomilError
from gliomil.runtime.files import atomic_directory, make_directory, write_bytes
from gliomil.runtime.workers import map_in_workers
from gliomil.synthetic.anatomy import Pose, Tissue, sample_pose, sample_site, warp
from gliomil.vocabulary import GRADES, MODALITIES, SEGMENTATION

FOV_MM = (240.0, 240.0, 155.0)
SEED_GRADE_ORDER = ("HGG", "LGG")  # part of every subject's seed: changing it changes every phantom
CASE_PREFIX = "SynBraTS"
GZIP_LEVEL = 6
ROUGHNESS = 0.04  # relative amplitude of the fine irregularity of every tumour outline

# Relative signal of each tissue per modality, in MODALITIES order (flair, t1, t1ce, t2).
# Ordering follows clinical appearance: T1 WM > GM > CSF; T2 CSF brightest; FLAIR suppresses
# free water (CSF dark) but not oedema or tumour, GM above WM, and the white matter capping the
# ventricles is bright; T1ce equals T1 except where contrast leaks or flows: tumour with a broken
# blood-brain barrier, and in a normal brain the choroid plexus, dura and vessels ("vascular",
# flow voids elsewhere).
CONTRAST = {
    "csf": (0.12, 0.30, 0.31, 1.00),
    "gm": (0.62, 0.62, 0.63, 0.52),
    "wm": (0.48, 0.90, 0.90, 0.38),
    "periventricular": (0.80, 0.78, 0.79, 0.62),
    "vascular": (0.30, 0.45, 1.15, 0.40),
    "edema": (0.95, 0.50, 0.51, 0.80),
    "solid": (0.85, 0.46, 0.48, 0.80),  # non-enhancing tumour tissue
    "necrosis": (0.45, 0.28, 0.29, 0.92),  # fluid-rich dead core / cyst
    "enhancing": (0.78, 0.55, 1.25, 0.64),
}
# Scanner gain per modality (uniform range): BraTS intensities are uncalibrated and differ
# between sites by factors of 2-3.
GAIN_RANGE = {"flair": (1200.0, 2800.0), "t1": (1200.0, 3000.0), "t1ce": (1200.0, 3600.0), "t2": (1500.0, 5000.0)}


@dataclass(frozen=True)
class Acquisition:
    """How one site's scanners image its patients; the defaults are the built-in cohort's.

    contrast: tissue contrast relative to :data:`CONTRAST`. Each modality's tissue signals move towards
        (< 1) or away from (> 1) their mean over tissues, as another sequence or field strength would.
    bias: range (uniform) of the bias field's log-scale amplitude, per modality.
    noise: range (uniform) of the Rician noise std, relative to the gain.
    The voxel size comes from the cohort's ``shape`` (the field of view is fixed).
    """

    contrast: float = 1.0
    bias: tuple[float, float] = (0.04, 0.14)
    noise: tuple[float, float] = (0.015, 0.04)

    def tissue_contrast(self) -> dict[str, tuple[float, ...]]:
        """:data:`CONTRAST` after ``contrast``: relative signal of each tissue per modality (flair, t1, t1ce, t2)."""
        if self.contrast == 1.0:  # exactly the built-in table: the default cohort stays byte-identical
            return CONTRAST
        mean = np.mean(list(CONTRAST.values()), axis=0)
        return {
            name: tuple(float(m + self.contrast * (v - m)) for v, m in zip(values, mean))
            for name, values in CONTRAST.items()
        }


BUILT_IN_SITE = Acquisition()

#: The scanners of a multi-site built-in cohort (``synthesize.sites`` > 1), in site order: each site's
#: :class:`Acquisition` and the factor on the cohort's in-plane voxel count (0.8: coarser in-plane voxels). Site 1 is
#: the built-in scanner; sites 3 and 4 image at a coarser resolution, so a confounded cohort (``confound``: HGG from
#: the first half of the sites, LGG from the rest) also differs in voxel size between the grades, as TCGA's
#: institutions did.
SITE_SCANNERS = (
    (BUILT_IN_SITE, 1.0),
    (Acquisition(contrast=1.15, bias=(0.02, 0.08), noise=(0.01, 0.025)), 1.0),
    (Acquisition(contrast=0.85, bias=(0.08, 0.2), noise=(0.03, 0.05)), 0.8),
    (Acquisition(contrast=0.9, bias=(0.1, 0.25), noise=(0.02, 0.045)), 0.8),
)
#: Case names of a multi-site cohort name their site the way BraTS 2018 ids do (gliomil.data.sites parses them).
MULTI_SITE_CASE = "Brats18_SYN{site}_{grade}{number}_1"


def site_of_subject(grade: str, number: int, sites: int, confound: bool) -> int:
    """The site (0-based) of subject ``number`` (1-based) of ``grade`` in a cohort of ``sites`` sites: round-robin
    over all sites (every site sees both grades), or with ``confound`` over the first half of the sites for HGG
    and the rest for LGG (every site sees one grade)."""
    if not confound:
        return (number - 1) % sites
    first, count = (0, sites // 2) if grade == "HGG" else (sites // 2, sites - sites // 2)
    return first + (number - 1) % count


# -- grid and random fields ------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """Voxel grid over the fixed field of view.

    shape:   (X, Y, Z) voxels.
    spacing: (3,) voxel size in mm.
    axes:    world coordinate (mm) of the voxel centres along x, y and z.
    """

    shape: tuple[int, int, int]
    spacing: np.ndarray
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def voxel_mm(self) -> float:
        """Mean voxel edge in mm: the width of partial-volume transitions."""
        return float(np.mean(self.spacing))

    def crop(self, box) -> Grid:
        """The sub-grid of the voxels in ``box`` (three slices)."""
        axes = tuple(axis[b] for axis, b in zip(self.axes, box))
        return Grid(tuple(len(a) for a in axes), self.spacing, axes)

    def box_around(self, centre, half_extent) -> tuple[slice, slice, slice]:
        """Index box (three slices) of the voxels within ``half_extent`` (3,) mm of ``centre``
        (3,) world mm, plus one voxel for partial volume, clipped to the grid."""
        box = []
        for axis, c, e, s in zip(self.axes, centre, half_extent, self.spacing):
            lo = int(np.searchsorted(axis, c - e - s))
            hi = int(np.searchsorted(axis, c + e + s))
            box.append(slice(lo, max(hi, lo)))
        return tuple(box)


def make_grid(shape) -> Grid:
    """Grid of ``shape`` voxels covering FOV_MM, centred on the world origin."""
    shape = tuple(int(n) for n in shape)
    spacing = np.array([f / n for f, n in zip(FOV_MM, shape)])
    axes = tuple((np.arange(n) + 0.5) * s - f / 2 for n, s, f in zip(shape, spacing, FOV_MM))
    return Grid(shape, spacing, axes)


def _axis_weights(coords: np.ndarray, nodes: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian interpolation weights (len(coords), len(nodes)), rows scaled to unit L2 norm.

    Unit row norms make the separable sum of i.i.d. N(0, 1) node values exactly unit-variance
    at every voxel, whatever its position relative to the nodes.
    """
    w = np.exp(-0.5 * ((coords[:, None] - nodes[None, :]) / sigma) ** 2)
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


def smooth_field(rng: np.random.Generator, grid: Grid, sigma_mm: float, region=None) -> np.ndarray:
    """Smooth Gaussian random field, zero mean and unit variance, float32 of ``grid.shape``.

    White noise on a node grid (spacing ``sigma_mm``) is smoothed by a Gaussian kernel of
    ``sigma_mm`` and evaluated at the voxel centres of ``grid`` (which may be a crop). Nodes
    cover ``region`` = (low corner, high corner) in world mm plus a 2-sigma margin (default:
    the whole field of view); the grid should lie inside it. The number of draws depends only
    on ``sigma_mm`` and ``region``, never on the grid, so a seed gives the same field in
    millimetres at every resolution.
    """
    if region is None:
        region = (-np.array(FOV_MM) / 2, np.array(FOV_MM) / 2)
    node_axes = [
        lo - 2 * sigma_mm + sigma_mm * np.arange(math.ceil((hi - lo) / sigma_mm) + 5) for lo, hi in zip(*region)
    ]
    nodes = rng.standard_normal(tuple(len(a) for a in node_axes), dtype=np.float32)
    weights = []
    for axis, node_axis in zip(grid.axes, node_axes):
        # Nodes more than 6 sigma from every voxel carry no weight (< 1e-7): skip them.
        near = (node_axis > axis[0] - 6 * sigma_mm) & (node_axis < axis[-1] + 6 * sigma_mm)
        weights.append((_axis_weights(axis, node_axis[near], sigma_mm), near))
    (wx, nx), (wy, ny), (wz, nz) = weights
    nodes = nodes[np.ix_(nx, ny, nz)]
    # Separable smoothing as three small matrix products: far cheaper than filtering a
    # full-resolution volume, and exact at every resolution.
    field = nodes @ wz.T  # (a, b, Z)
    field = np.matmul(wy, field)  # (a, Y, Z)
    field = np.tensordot(wx, field, axes=(1, 0))  # (X, Y, Z)
    return np.ascontiguousarray(field, dtype=np.float32)


def _ramp(t):
    """Partial-volume fraction of a voxel whose centre lies ``t`` voxel widths inside a boundary."""
    return np.clip(t + 0.5, 0.0, 1.0)


# -- tumour ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tumour:
    """One glioma (lengths in mm, centre in world mm).

    semi_axes:    (3,) semi-axes of the tumour core (labels 1 + 4) before the irregular outline.
    irregularity: relative amplitude of the outline's random dents.
    edema:        typical reach (mm) of the oedema (label 2) beyond the core in white matter;
                  40 % of that elsewhere.
    rim:          enhancing rim thickness around a necrotic centre; 0 when there is no rim.
    enhancing_share: share of a rim-less core that enhances in patches (0 = non-enhancing).
    necrosis_share: radius of a fluid centre (necrosis / cyst) relative to the core; 0 = none;
                  with a rim, everything inside the rim is fluid.
    heterogeneity: relative amplitude of the intensity texture inside the core.
    edema_strength: how much the oedema replaces the signal of the tissue it infiltrates.
    signal:       (3, 4) multipliers of CONTRAST for solid / necrosis / enhancing per modality.
    wm_spread:    how far the outline reaches along white matter (LGG infiltrate along tracts): the outline's
                  radius is scaled by 1 + wm_spread * (2 * wm - 1), wm the white-matter fraction there.
    mass:         radius (mm) of the tissue the tumour displaced (:func:`gliomil.synthetic.anatomy.warp`); the rest of
                  the core infiltrates the tissue in place.
    """

    grade: str
    centre: np.ndarray
    semi_axes: np.ndarray
    irregularity: float
    edema: float
    rim: float
    enhancing_share: float
    necrosis_share: float
    heterogeneity: float
    edema_strength: float
    signal: np.ndarray
    wm_spread: float
    mass: float

    def half_extent(self) -> np.ndarray:
        """(3,) mm from the centre that holds the whole lesion, oedema included.

        A true bound: lesion_maps clips the outline and oedema fields to keep it.
        """
        return lesion_half_extent(self.semi_axes, self.irregularity, self.edema, self.wm_spread)


def lesion_half_extent(semi_axes: np.ndarray, irregularity: float, edema: float, wm_spread: float) -> np.ndarray:
    """(3,) mm from a tumour's centre that bounds its core and oedema (see lesion_maps): the
    outline is scaled by at most 1 + 2 * (irregularity + ROUGHNESS) + wm_spread, the oedema reaches at most
    1.8 * edema mm beyond it."""
    return semi_axes * (1 + 2 * (irregularity + ROUGHNESS) + wm_spread) + 1.8 * edema


def sample_tumour(grade: str, rng: np.random.Generator, pose: Pose) -> Tumour:
    """Draw a glioma of ``grade`` ("HGG" or "LGG") for a brain of this pose, centred in white matter.

    Typical HGG: irregular, ring-enhancing around necrosis, heterogeneous, wide oedema.
    Typical LGG: smoother, non-enhancing, homogeneous, T2/FLAIR bright, little oedema.
    Either grade sometimes looks like the other (non-enhancing HGG, patchily enhancing or
    cystic LGG), as in real cohorts, so the grade is learnable but not given away.
    """
    centre = sample_site(rng, pose)
    if grade == "HGG":
        radius = rng.uniform(8.0, 24.0)
        irregularity = rng.uniform(0.08, 0.26)
        edema = rng.uniform(2.0, 16.0)
        heterogeneity = rng.uniform(0.04, 0.14)
        kind = rng.random()
        if kind < 0.72:  # ring enhancement around necrosis
            rim, share, necrosis = rng.uniform(2.0, 5.5), 0.0, 1.0
        elif kind < 0.85:  # solid, patchily enhancing, no necrosis
            rim, share, necrosis = 0.0, rng.uniform(0.2, 0.7), 0.0
        else:  # non-enhancing
            rim, share = 0.0, 0.0
            necrosis = rng.uniform(0.3, 0.6) if rng.random() < 0.3 else 0.0
    else:
        radius = rng.uniform(8.0, 24.0)
        irregularity = rng.uniform(0.05, 0.20)
        edema = rng.uniform(1.0, 13.0)
        heterogeneity = rng.uniform(0.03, 0.10)
        rim = 0.0
        share = rng.uniform(0.05, 0.5) if rng.random() < 0.25 else 0.0
        necrosis = rng.uniform(0.3, 0.6) if rng.random() < 0.15 else 0.0
    semi = radius * rng.uniform(0.8, 1.2, size=3)
    semi[2] *= rng.uniform(0.75, 1.0)
    # Gliomas displace more than they infiltrate when they grow fast (HGG); LGG infiltrate along white matter.
    if grade == "HGG":
        wm_spread, displaced = rng.uniform(0.0, 0.1), rng.uniform(0.45, 0.75)
    else:
        wm_spread, displaced = rng.uniform(0.15, 0.35), rng.uniform(0.2, 0.5)
    # Keep the lesion, oedema included, to a minority of the brain's axial slices (a MIL bag
    # should be mostly normal slices).
    reach_z = lesion_half_extent(semi, irregularity, edema, wm_spread)[2]
    limit = 0.21 * pose.height
    if reach_z > limit:  # flatten rather than shrink in-plane
        semi[2] *= limit / reach_z
        edema *= limit / reach_z
    signal = rng.normal(1.0, 0.07, size=(3, 4)).clip(0.75, 1.25)
    return Tumour(
        grade=grade,
        centre=centre,
        semi_axes=semi,
        irregularity=irregularity,
        edema=edema,
        rim=rim,
        enhancing_share=share,
        necrosis_share=necrosis,
        heterogeneity=heterogeneity,
        edema_strength=rng.uniform(0.55, 0.9),
        signal=signal,
        wm_spread=wm_spread,
        mass=displaced * float(semi.min()),
    )


@dataclass
class Lesion:
    """Tumour compartments on the voxels of ``box`` (three slices of the tissue grid).

    Partial-volume fractions, float32 of the box shape: core = solid + necrosis + enhancing;
    edema lies outside the core. texture: unit random field for the core's heterogeneity.
    seg: uint8 BraTS labels of the box.
    """

    box: tuple[slice, slice, slice]
    core: np.ndarray
    solid: np.ndarray
    necrosis: np.ndarray
    enhancing: np.ndarray
    edema: np.ndarray
    texture: np.ndarray
    seg: np.ndarray


def lesion_maps(grid: Grid, tumour: Tumour, tissue: Tissue, rng: np.random.Generator) -> Lesion:
    """Soft compartments and BraTS labels of ``tumour`` on the voxels of ``grid`` near it.

    ``grid`` is the grid ``tissue`` lives on. Draws six random fields from ``rng``, on nodes
    around the tumour only (cheap, and still independent of the grid).
    """
    h = grid.voxel_mm
    reach = tumour.half_extent()
    region = (tumour.centre - reach, tumour.centre + reach)
    box = grid.box_around(tumour.centre, reach)
    local = grid.crop(box)
    lobes, roughness, edema_field, rim_field, patch_field, texture = (
        smooth_field(rng, local, sigma, region) for sigma in (9.0, 3.0, 5.0, 3.0, 3.5, 2.5)
    )

    d = [(local.axes[i] - tumour.centre[i]).astype(np.float32) for i in range(3)]
    a = tumour.semi_axes.tolist()
    rt = np.sqrt(
        (d[0][:, None, None] / a[0]) ** 2 + (d[1][None, :, None] / a[1]) ** 2 + (d[2][None, None, :] / a[2]) ** 2
    )
    brain, mask, csf, wm = (x[box] for x in (tissue.brain, tissue.mask, tissue.csf, tissue.wm))
    # Large lobes plus a finely rough margin, reaching further along white matter; clipped so that
    # lesion_half_extent holds.
    rt /= (
        1
        + tumour.irregularity * np.clip(lobes, -2, 2)
        + ROUGHNESS * np.clip(roughness, -2, 2)
        + tumour.wm_spread * (2 * wm - 1)
    )
    # Signed distance (mm) inside the outline along the ray from the centre: the outline's
    # radius in this direction is |d| / rt.
    outline_mm = np.sqrt(d[0][:, None, None] ** 2 + d[1][None, :, None] ** 2 + d[2][None, None, :] ** 2)
    outline_mm /= np.maximum(rt, 1e-6)
    outline_mm[rt < 1e-6] = min(a)
    inside_mm = (1 - rt) * outline_mm
    core = _ramp(inside_mm / h) * brain
    core_in = (inside_mm > 0) & mask

    # Oedema spreads along white-matter tracts more than through cortex, and not into CSF.
    edema_mm = tumour.edema * np.clip(1 + 0.5 * edema_field, 0, 1.8) * (0.4 + 0.6 * wm)
    edema = _ramp((edema_mm + inside_mm) / h) * (1 - csf) * brain * (1 - core)
    edema_in = (edema_mm + inside_mm > 0) & (csf < 0.5) & mask

    fluid_mm = None
    if tumour.rim > 0:
        rim = np.maximum(tumour.rim * (1 + 0.35 * rim_field), 1.0)
        enhancing = core * _ramp((rim - inside_mm) / h)
        enhancing_in = core_in & (inside_mm < rim)
        fluid_mm = inside_mm - rim
    elif tumour.enhancing_share > 0:
        threshold = float(ndtri(1 - tumour.enhancing_share))
        enhancing = core * np.clip((patch_field - threshold) / 0.4 + 0.5, 0, 1)
        enhancing_in = core_in & (patch_field > threshold)
    else:
        enhancing = np.zeros_like(core)
        enhancing_in = np.zeros_like(core_in)
    if tumour.necrosis_share > 0 and fluid_mm is None:
        fluid_mm = inside_mm - (1 - tumour.necrosis_share) * outline_mm
    necrosis = np.zeros_like(core) if fluid_mm is None else (core - enhancing) * _ramp(fluid_mm / h)
    solid = core - enhancing - necrosis

    seg = np.zeros(core.shape, dtype=np.uint8)
    seg[edema_in] = 2
    seg[core_in] = 1
    seg[enhancing_in] = 4
    return Lesion(
        box=box, core=core, solid=solid, necrosis=necrosis, enhancing=enhancing, edema=edema, texture=texture, seg=seg
    )


# -- imaging ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scanner:
    """Acquisition of one patient: per-modality gain (intensity units), bias amplitude
    (log-scale std of the multiplicative field), Rician noise std relative to the gain, and
    tissue texture amplitude."""

    gain: np.ndarray
    bias: np.ndarray
    noise: float
    texture: float


def sample_scanner(rng: np.random.Generator, acquisition: Acquisition = BUILT_IN_SITE) -> Scanner:
    """Draw gains, bias-field strengths and noise level for the four modalities."""
    gain = np.array([rng.uniform(*GAIN_RANGE[m]) for m in MODALITIES])
    return Scanner(
        gain=gain,
        bias=rng.uniform(*acquisition.bias, size=4),
        noise=rng.uniform(*acquisition.noise),
        texture=rng.uniform(0.015, 0.03),
    )


def render(
    tissue: Tissue,
    tumour: Tumour,
    lesion: Lesion,
    scanner: Scanner,
    texture: np.ndarray,
    bias_fields: list[np.ndarray],
    rng: np.random.Generator,
    contrast: dict[str, tuple[float, ...]] = CONTRAST,
) -> np.ndarray:
    """The four noisy, bias-corrupted images on the tissue grid, float32 (4, X, Y, Z).

    Exactly 0 outside the brain mask, at least 1 inside. texture: unit random field for fine
    tissue heterogeneity; bias_fields: four unit random fields, one per modality. ``rng`` is
    used for the noise only.
    """
    box = lesion.box
    images = np.empty((4, *tissue.brain.shape), dtype=np.float32)
    for m in range(4):
        c = {name: values[m] for name, values in contrast.items()}
        image = (
            tissue.csf * c["csf"]
            + tissue.gm * c["gm"]
            + (tissue.wm - tissue.periventricular) * c["wm"]
            + tissue.periventricular * c["periventricular"]
        )
        image *= 1 + scanner.texture * texture
        image += tissue.vascular * (c["vascular"] - image)
        e = tumour.edema_strength * lesion.edema
        near = image[box] * (1 - e) + e * c["edema"]
        signal = tumour.signal[:, m].tolist()
        lesion_signal = (
            lesion.solid * (c["solid"] * signal[0])
            + lesion.necrosis * (c["necrosis"] * signal[1])
            + lesion.enhancing * (c["enhancing"] * signal[2])
        )
        image[box] = near * (1 - lesion.core) + lesion_signal * (1 + tumour.heterogeneity * lesion.texture)
        image *= np.exp(float(scanner.bias[m]) * bias_fields[m])
        images[m] = image * float(scanner.gain[m])
    sigma = (scanner.noise * scanner.gain).astype(np.float32)[:, None, None, None]
    # Magnitude images: Rician noise from two Gaussian channels.
    real = images + sigma * rng.standard_normal(images.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(images.shape, dtype=np.float32)
    images = np.sqrt(real * real + imag * imag) * tissue.brain
    # Skull-stripped: "non-zero" must mean "brain" for any consumer.
    return np.where(tissue.mask, np.maximum(images, np.float32(1)), np.float32(0))


def synthesize_subject(
    grade: str, shape, rng: np.random.Generator, acquisition: Acquisition = BUILT_IN_SITE
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic patient.

    grade: "HGG" or "LGG". shape: (X, Y, Z) voxels over the 240 x 240 x 155 mm field of view.
    Returns (images, seg): images float32 (4, X, Y, Z), RAS, in MODALITIES order (flair, t1, t1ce, t2),
    in scanner-like intensity units (hundreds to several thousands), exactly 0 outside the brain
    and >= 1 inside; seg uint8 (X, Y, Z) with labels 0 / 1 / 2 / 4.
    """
    phantom = synthesize_phantom(grade, shape, rng, acquisition)
    return phantom.images, phantom.seg


@dataclass
class Phantom:
    """A synthetic patient and the truth behind it.

    images, seg: as :func:`synthesize_subject` returns them. tissue: the normal tissue (before the tumour
    replaced any) on the voxels of ``box`` (three slices of the full grid, the box around the brain).
    tumour: the glioma's parameters.
    """

    images: np.ndarray
    seg: np.ndarray
    tissue: Tissue
    box: tuple[slice, slice, slice]
    tumour: Tumour


def synthesize_phantom(
    grade: str, shape, rng: np.random.Generator, acquisition: Acquisition = BUILT_IN_SITE
) -> Phantom:
    """:func:`synthesize_subject` with the tissue and tumour it was built from (for tests and figures)."""
    if grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES}, got {grade!r}")
    shape = _checked_shape(shape)
    # One BLAS thread: the matrix products here are small, extra threads slow everything down when the
    # cores are busy (worker processes, other jobs), and a fixed thread count keeps results bit-identical.
    with threadpool_limits(limits=1, user_api="blas"):
        return _synthesize(grade, shape, rng, acquisition)


DEFORMATION_MM = (1.5, 3.5)  # range (uniform) of the random deformation's amplitude (std per axis)
DEFORMATION_SIGMA_MM = 30.0  # its smoothness
DEFORMATION_CLIP = 2.0  # its fields are clipped to this many std: a deformation moves tissue by less than 2 amplitudes
HEADROOM_MM = 3.0  # between the top of the brain and the field of view's upper edge, beyond the deformation


def _synthesize(grade: str, shape: tuple[int, int, int], rng: np.random.Generator, acquisition: Acquisition):
    full = make_grid(shape)
    deformation = rng.uniform(*DEFORMATION_MM)
    reach = DEFORMATION_CLIP * deformation
    pose = sample_pose(rng, ceiling=FOV_MM[2] / 2 - reach - HEADROOM_MM)
    tumour = sample_tumour(grade, rng, pose)
    scanner = sample_scanner(rng, acquisition)
    # Only the box around the brain is computed: the background is 0 anyway, and the box holds a third of
    # the field of view. The deformation moves tissue by less than `reach` per axis, the mass effect outwards by
    # less than its radius.
    margin = reach * np.sqrt(3) + tumour.mass + 2 * full.voxel_mm
    low, high = pose.brain_box(margin)
    brain_box = full.box_around((low + high) / 2, (high - low) / 2)
    grid = full.crop(brain_box)

    displacement = np.stack(
        [
            np.clip(smooth_field(rng, grid, DEFORMATION_SIGMA_MM), -DEFORMATION_CLIP, DEFORMATION_CLIP)
            * np.float32(deformation)
            for _ in range(3)
        ]
    )
    texture = smooth_field(rng, grid, 6.0)
    bias_fields = [smooth_field(rng, grid, 45.0) for _ in MODALITIES]
    tissue = warp(grid, pose, displacement, tumour.centre, tumour.mass)
    lesion = lesion_maps(grid, tumour, tissue, rng)
    images = np.zeros((4, *full.shape), dtype=np.float32)
    images[(slice(None), *brain_box)] = render(
        tissue, tumour, lesion, scanner, texture, bias_fields, rng, acquisition.tissue_contrast()
    )
    seg = np.zeros(full.shape, dtype=np.uint8)
    seg[brain_box][lesion.box] = lesion.seg
    return Phantom(images=images, seg=seg, tissue=tissue, box=brain_box, tumour=tumour)


def _checked_shape(shape) -> tuple[int, int, int]:
    try:
        dims = tuple(int(n) for n in shape)
        ok = len(dims) == 3 and all(n == s and n >= 16 for n, s in zip(dims, shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"synthesize: shape must be three integers >= 16, got {shape!r}")
    return dims


# -- writing ---------------------------------------------------------------------------------


def case_name(grade: str, number: int, width: int = 3, prefix: str = CASE_PREFIX) -> str:
    """``<prefix>_<grade>_<number>``, the number zero-padded to ``width`` digits (1-based)."""
    return f"{prefix}_{grade}_{number:0{width}d}"


def subject_seed(seed: int, grade: str, number: int) -> np.random.SeedSequence:
    """Independent seed of subject ``number`` (1-based) of ``grade``; unaffected by cohort size."""
    return np.random.SeedSequence([seed, SEED_GRADE_ORDER.index(grade), number])


def brats_affine(shape) -> np.ndarray:
    """The affine (4, 4) BraTS ships its volumes with, for a grid of ``shape`` voxels over FOV_MM: LPS voxel
    axes, ``diag(-1, -1, 1)`` with the offset (0, 239, 0) at 240 x 240 x 155 (the voxel size scales both)."""
    spacing = np.array(FOV_MM) / np.array(shape)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[1, 3] = (shape[1] - 1) * spacing[1]
    return affine


def to_brats_lps(volume: np.ndarray) -> np.ndarray:
    """A RAS-indexed volume (..., X, Y, Z) in the LPS voxel order of :func:`brats_affine` (x and y reversed)."""
    return volume[..., ::-1, ::-1, :]


def nifti_gz_bytes(data: np.ndarray, affine: np.ndarray, code: int = 1) -> bytes:
    """A .nii.gz file as bytes, identical for identical input (gzip mtime 0, no file name); qform and sform
    both set to ``affine`` with ``code`` (1, scanner, as BraTS files have)."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=code)
    image.set_sform(affine, code=code)
    return gzip.compress(image.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def write_case(case_dir: Path, case: str, images: np.ndarray, seg: np.ndarray) -> None:
    """Write one case's five files into ``case_dir`` (created), stored as BraTS stores them: LPS voxel order
    and affine (:func:`brats_affine`), int16 images, uint8 seg. ``images`` (4, X, Y, Z) and ``seg`` (X, Y, Z)
    are RAS-indexed, as :func:`synthesize_subject` returns them. Each file is written atomically
    (:func:`gliomil.runtime.files.write_bytes`): a full disk raises OutputError naming the file."""
    make_directory(case_dir)
    affine = brats_affine(seg.shape)
    ints = np.clip(np.rint(images), 0, np.iinfo(np.int16).max).astype(np.int16)
    for name, data in (*zip(MODALITIES, ints), (SEGMENTATION, seg.astype(np.uint8))):
        write_bytes(case_dir / f"{case}_{name}.nii.gz", nifti_gz_bytes(to_brats_lps(data), affine))


@dataclass(frozen=True)
class _Job:
    grade: str
    number: int
    case: str
    seed: int
    shape: tuple[int, int, int]
    root: Path
    acquisition: Acquisition


def _run_job(job: _Job) -> str:
    rng = np.random.default_rng(subject_seed(job.seed, job.grade, job.number))
    images, seg = synthesize_subject(job.grade, job.shape, rng, job.acquisition)
    write_case(job.root / job.grade / job.case, job.case, images, seg)
    return job.case


def synthesize_cohort(
    out_dir,
    n_hgg: int,
    n_lgg: int,
    shape: tuple[int, int, int],
    seed: int,
    workers: int = 1,
    progress: bool = False,
    acquisition: Acquisition = BUILT_IN_SITE,
    prefix: str = CASE_PREFIX,
    sites: int = 1,
    confound: bool = False,
) -> list[str]:
    """Write a synthetic cohort in the BraTS 2018 layout under ``out_dir``; return the case names, sorted.

    ``acquisition`` is the site's scanner (:class:`Acquisition`); ``prefix`` starts every case name.
    ``sites`` > 1 spreads the subjects over that many scanners of :data:`SITE_SCANNERS` (``acquisition`` and
    ``prefix`` then do not apply: the case names are :data:`MULTI_SITE_CASE`, naming the site), round-robin, or
    with ``confound`` tying grade to site (:func:`site_of_subject`). A subject's anatomy and tumour do not depend on
    its site: the same patients, other scanners.
    ``out_dir`` must not exist or be empty. Everything is built in a hidden sibling folder
    (:func:`gliomil.runtime.files.atomic_directory`) and renamed into place at the end, so a failure leaves no
    half-written cohort. Output is byte-identical for the same (n_hgg, n_lgg, shape, seed, sites, confound)
    whatever ``workers`` is, and subject k of a grade does not depend on n_hgg or n_lgg.
    ``workers`` > 1 uses that many processes; ``progress`` shows a tqdm bar on stderr.
    Raises ValueError for bad arguments, GliomilError when ``out_dir`` is not empty.
    """
    shape = _checked_shape(shape)
    for key, value, low in (("n_hgg", n_hgg, 0), ("n_lgg", n_lgg, 0), ("workers", workers, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"synthesize: {key} must be an integer >= {low}, got {value!r}")
    if n_hgg + n_lgg == 0:
        raise ValueError("synthesize: n_hgg + n_lgg must be at least 1")
    if not 1 <= sites <= len(SITE_SCANNERS):
        raise ValueError(f"synthesize: sites must be an integer in [1, {len(SITE_SCANNERS)}], got {sites!r}")
    if confound and sites < 2:
        raise ValueError("synthesize: confound ties grade to site and needs sites >= 2")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise GliomilError(f"{out_dir}: output folder already exists and is not empty")
    with atomic_directory(out_dir) as tmp_dir:
        jobs = []
        for grade, count in (("HGG", n_hgg), ("LGG", n_lgg)):
            make_directory(tmp_dir / grade)
            width = max(3, len(str(count)))
            for k in range(1, count + 1):
                if sites == 1:
                    jobs.append(
                        _Job(grade, k, case_name(grade, k, width, prefix), int(seed), shape, tmp_dir, acquisition)
                    )
                    continue
                site = site_of_subject(grade, k, sites, confound)
                scanner, in_plane = SITE_SCANNERS[site]
                site_shape = (round(shape[0] * in_plane), round(shape[1] * in_plane), shape[2])
                name = MULTI_SITE_CASE.format(site=site + 1, grade=grade, number=f"{k:0{width}d}")
                jobs.append(_Job(grade, k, name, int(seed), _checked_shape(site_shape), tmp_dir, scanner))
        cases = list(map_in_workers(_run_job, jobs, workers, progress="synthesize" if progress else None))
    return sorted(cases)
