"""Synthetic BraTS-style cohort: skull-stripped multi-modal brain MRI phantoms with gliomas.

The cohort is written in the BraTS 2018 layout::

    <out_dir>/HGG/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz
    <out_dir>/LGG/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz

with cases named ``SynBraTS_HGG_001``, ``SynBraTS_LGG_001``, ... Images are int16, the
segmentation uint8 with the BraTS labels 0 background, 1 necrotic / non-enhancing core,
2 edema, 4 enhancing tumour. Every volume covers the same 240 x 240 x 155 mm field of view
(BraTS' SRI24 box), so the voxel size is that field of view divided by the array shape.

Conventions used throughout:

* Arrays are indexed (x, y, z) = (left->right, posterior->anterior, inferior->superior),
  i.e. RAS. World coordinates are millimetres with the origin at the centre of the field
  of view.
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

from .errors import GliomilError
from .files import atomic_directory
from .vocabulary import GRADES, MODALITIES, SEGMENTATION
from .workers import map_in_workers

FOV_MM = (240.0, 240.0, 155.0)
SEED_GRADE_ORDER = ("HGG", "LGG")  # part of every subject's seed: changing it changes every phantom
CASE_PREFIX = "SynBraTS"
GZIP_LEVEL = 6
ROUGHNESS = 0.04  # relative amplitude of the fine irregularity of every tumour outline

# Relative signal of each tissue per modality, in MODALITIES order (flair, t1, t1ce, t2).
# Ordering follows clinical appearance: T1 WM > GM > CSF; T2 CSF brightest; FLAIR suppresses
# free water (CSF dark) but not oedema or tumour; T1ce equals T1 except where the
# blood-brain barrier is broken (enhancing tumour).
CONTRAST = {
    "csf": (0.12, 0.30, 0.31, 1.00),
    "gm": (0.62, 0.62, 0.63, 0.52),
    "wm": (0.48, 0.90, 0.90, 0.38),
    "edema": (0.95, 0.50, 0.51, 0.80),
    "solid": (0.85, 0.46, 0.48, 0.80),  # non-enhancing tumour tissue
    "necrosis": (0.45, 0.28, 0.29, 0.92),  # fluid-rich dead core / cyst
    "enhancing": (0.78, 0.55, 1.25, 0.64),
}
# Scanner gain per modality (uniform range): BraTS intensities are uncalibrated and differ
# between sites by factors of 2-3.
GAIN_RANGE = {"flair": (300.0, 700.0), "t1": (300.0, 900.0), "t1ce": (300.0, 1100.0), "t2": (400.0, 1600.0)}


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


def voxel_affine(shape) -> np.ndarray:
    """RAS affine (4, 4) of a grid of ``shape`` voxels over FOV_MM: voxel centres in world mm."""
    grid = make_grid(shape)
    affine = np.diag([*grid.spacing, 1.0])
    affine[:3, 3] = [axis[0] for axis in grid.axes]
    return affine


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


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Rotation matrix (3, 3) about z (yaw), then x (pitch), then y (roll); angles in degrees."""
    a, b, c = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return ry @ rx @ rz


# -- anatomy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """One patient's brain geometry (all lengths in mm, positions in world mm).

    centre:       (3,) brain centre.
    rotation:     (3, 3) maps brain-frame vectors (left-right, posterior-anterior,
                  inferior-superior) to world vectors.
    semi_axes:    (3,) brain ellipsoid semi-axes in the brain frame (the inferior half uses
                  0.9 times the vertical one: the temporal lobes and cerebellum taper).
    sulcal_depth: how deep sulci cut into the brain.
    cortex:       cortical grey-matter thickness.
    ventricle:    half-width of each lateral ventricle (grows with age / atrophy).
    """

    centre: np.ndarray
    rotation: np.ndarray
    semi_axes: np.ndarray
    sulcal_depth: float
    cortex: float
    ventricle: float

    @property
    def scale(self) -> float:
        """Head size relative to an average adult brain."""
        return float(np.mean(self.semi_axes / np.array([67.0, 83.0, 53.0])))

    @property
    def height(self) -> float:
        """Vertical extent of the brain in mm (ignoring rotation)."""
        return 1.9 * float(self.semi_axes[2])

    def half_extent(self) -> np.ndarray:
        """(3,) world mm from the centre that holds the whole brain, whatever the rotation."""
        # The outline's dents (3 % of a field clipped to +-4) stay within 15 % of the ellipsoid.
        return 1.15 * np.sqrt(((self.rotation * self.semi_axes) ** 2).sum(axis=1))


def sample_head(rng: np.random.Generator) -> Head:
    """Draw a patient's head size, position, orientation and fine anatomy."""
    scale = rng.uniform(0.9, 1.06)
    semi = np.array([67.0, 83.0, 53.0]) * scale * rng.uniform(0.97, 1.03, size=3)
    centre = np.array([rng.uniform(-7, 7), rng.uniform(-7, 7), rng.uniform(-6, 3)])
    rotation = _rotation(rng.uniform(-10, 10), rng.uniform(-6, 6), rng.uniform(-4, 4))
    return Head(
        centre=centre,
        rotation=rotation,
        semi_axes=semi,
        sulcal_depth=rng.uniform(9.0, 14.0),
        cortex=rng.uniform(2.6, 3.4),
        ventricle=rng.uniform(2.5, 6.0),
    )


def brain_frame(grid: Grid, head: Head) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain-frame coordinates (u, v, w) in mm of the voxel centres, each float32 (X, Y, Z)."""
    d = [(grid.axes[i] - head.centre[i]).astype(np.float32) for i in range(3)]
    d = [d[0][:, None, None], d[1][None, :, None], d[2][None, None, :]]
    r = head.rotation.tolist()  # Python floats keep the float32 arrays float32
    # Brain frame = rotation^T (world - centre).
    return tuple(r[0][k] * d[0] + r[1][k] * d[1] + r[2][k] * d[2] for k in range(3))


@dataclass
class Tissue:
    """Tissue fractions of each voxel, float32 (X, Y, Z); csf + gm + wm = 1 inside the brain.

    brain: partial-volume brain fraction; mask: bool, voxel centre inside the brain.
    """

    brain: np.ndarray
    mask: np.ndarray
    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray


def tissue_fractions(grid: Grid, head: Head, surface: np.ndarray, folding: np.ndarray) -> Tissue:
    """Brain mask and CSF / grey / white matter fractions.

    surface: unit random field that dents the brain outline; folding: unit random field
    whose zero set becomes the sulci (a maze of sheets, like cortical folding).
    """
    h = grid.voxel_mm
    s = head.scale
    u, v, w = brain_frame(grid, head)
    a = head.semi_axes.tolist()
    aw = np.where(w < 0, np.float32(0.9 * a[2]), np.float32(a[2]))
    r = np.sqrt((u / a[0]) ** 2 + (v / a[1]) ** 2 + (w / aw) ** 2)
    r_outline = r * (1 + 0.03 * np.clip(surface, -4, 4))
    # Depth below the outline along the ray from the centre: exact for a sphere, close enough
    # for this nearly spherical brain.
    depth = (1 - r_outline) * np.sqrt(u**2 + v**2 + w**2) / np.maximum(r, 1e-3)
    brain = _ramp(depth / h)

    # The interhemispheric fissure is a second cortical surface on the midline plane, above
    # the corpus callosum and all the way down at the frontal and occipital poles.
    w_callosum = 18.0 * s
    below = np.minimum(np.maximum(w_callosum - w, 0), np.maximum(0.55 * a[1] - np.abs(v), 0))
    cortical_depth = np.minimum(depth, np.abs(u) + below)
    sulci = np.exp(-((folding / 0.3) ** 2))
    depth_below_csf = cortical_depth - head.sulcal_depth * sulci
    csf_outer = 1 - _ramp((depth_below_csf - 1.0) / h)
    cortex = 1 - _ramp((depth_below_csf - 1.0 - head.cortex) / h)

    nuclei = np.zeros_like(u)
    ventricles = np.zeros_like(u)
    for side in (-1.0, 1.0):
        # Basal ganglia / thalamus: one grey block per hemisphere beside the ventricles.
        rn = np.sqrt(
            ((u - side * 18 * s) / (8 * s)) ** 2 + ((v - 2 * s) / (14 * s)) ** 2 + ((w - 2 * s) / (9 * s)) ** 2
        )
        nuclei = np.maximum(nuclei, _ramp((1 - rn) * 8 * s / h))
        # Lateral ventricles: C-shaped (horns curve down at both ends), frontal horns wider,
        # occipital horns diverging from the midline.
        length = 28 * s
        t = (v - 2 * s) / length
        half_width = head.ventricle * (1 + 0.35 * np.clip(t, -1, 1))
        lu = u - side * (head.ventricle + 1.5 + 7 * s * np.maximum(-t, 0) ** 2)
        lw = w - 9 * s + 5 * s * t**2
        rv = np.sqrt((lu / half_width) ** 2 + t**2 + (lw / (9 * s)) ** 2)
        ventricles = np.maximum(ventricles, _ramp((1 - rv) * half_width / h))

    inner = 1 - cortex
    csf = csf_outer + inner * ventricles
    gm = (cortex - csf_outer) + inner * (1 - ventricles) * nuclei
    wm = inner * (1 - ventricles) * (1 - nuclei)
    return Tissue(
        brain=brain.astype(np.float32),
        mask=depth > 0,
        csf=csf.astype(np.float32),
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
    )


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

    def half_extent(self) -> np.ndarray:
        """(3,) mm from the centre that holds the whole lesion, oedema included.

        A true bound: lesion_maps clips the outline and oedema fields to keep it.
        """
        return lesion_half_extent(self.semi_axes, self.irregularity, self.edema)


def lesion_half_extent(semi_axes: np.ndarray, irregularity: float, edema: float) -> np.ndarray:
    """(3,) mm from a tumour's centre that bounds its core and oedema (see lesion_maps): the
    outline is scaled by at most 1 + 2 * (irregularity + ROUGHNESS), the oedema reaches at most
    1.8 * edema mm beyond it."""
    return semi_axes * (1 + 2 * (irregularity + ROUGHNESS)) + 1.8 * edema


def _tumour_centre(rng: np.random.Generator, head: Head) -> np.ndarray:
    """A point deep enough in one hemisphere, above the skull base, in world mm."""
    while True:
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        point = direction * rng.uniform(0.25, 0.6)
        if abs(point[0]) > 0.15 and point[2] > -0.4:
            return head.centre + head.rotation @ (point * head.semi_axes)


def sample_tumour(grade: str, rng: np.random.Generator, head: Head) -> Tumour:
    """Draw a glioma of ``grade`` ("HGG" or "LGG") for this head.

    Typical HGG: irregular, ring-enhancing around necrosis, heterogeneous, wide oedema.
    Typical LGG: smoother, non-enhancing, homogeneous, T2/FLAIR bright, little oedema.
    Either grade sometimes looks like the other (non-enhancing HGG, patchily enhancing or
    cystic LGG), as in real cohorts, so the grade is learnable but not given away.
    """
    centre = _tumour_centre(rng, head)
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
    # Keep the lesion, oedema included, to a minority of the brain's axial slices (a MIL bag
    # should be mostly normal slices).
    reach_z = lesion_half_extent(semi, irregularity, edema)[2]
    limit = 0.21 * head.height
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
    # Large lobes plus a finely rough margin; clipped so that lesion_half_extent holds.
    rt /= 1 + tumour.irregularity * np.clip(lobes, -2, 2) + ROUGHNESS * np.clip(roughness, -2, 2)
    # Signed distance (mm) inside the outline along the ray from the centre: the outline's
    # radius in this direction is |d| / rt.
    outline_mm = np.sqrt(d[0][:, None, None] ** 2 + d[1][None, :, None] ** 2 + d[2][None, None, :] ** 2)
    outline_mm /= np.maximum(rt, 1e-6)
    outline_mm[rt < 1e-6] = min(a)
    inside_mm = (1 - rt) * outline_mm
    brain, mask, csf, wm = (x[box] for x in (tissue.brain, tissue.mask, tissue.csf, tissue.wm))
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
        image = tissue.csf * c["csf"] + tissue.gm * c["gm"] + tissue.wm * c["wm"]
        image *= 1 + scanner.texture * texture
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
    Returns (images, seg): images float32 (4, X, Y, Z) in MODALITIES order (flair, t1, t1ce, t2),
    in scanner-like intensity units (hundreds to low thousands), exactly 0 outside the brain
    and >= 1 inside; seg uint8 (X, Y, Z) with labels 0 / 1 / 2 / 4.
    """
    if grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES}, got {grade!r}")
    shape = _checked_shape(shape)
    # One BLAS thread: the matrix products here are small, extra threads slow everything down when the
    # cores are busy (worker processes, other jobs), and a fixed thread count keeps results bit-identical.
    with threadpool_limits(limits=1, user_api="blas"):
        return _synthesize(grade, shape, rng, acquisition)


def _synthesize(grade: str, shape: tuple[int, int, int], rng: np.random.Generator, acquisition: Acquisition):
    full = make_grid(shape)
    head = sample_head(rng)
    tumour = sample_tumour(grade, rng, head)
    scanner = sample_scanner(rng, acquisition)
    # Only the box around the brain is computed: the background is 0 anyway, and the box
    # holds a third of the field of view.
    brain_box = full.box_around(head.centre, head.half_extent())
    grid = full.crop(brain_box)

    surface, folding, texture = (smooth_field(rng, grid, sigma) for sigma in (12.0, 3.0, 6.0))
    bias_fields = [smooth_field(rng, grid, 45.0) for _ in MODALITIES]
    tissue = tissue_fractions(grid, head, surface, folding)
    lesion = lesion_maps(grid, tumour, tissue, rng)
    images = np.zeros((4, *full.shape), dtype=np.float32)
    images[(slice(None), *brain_box)] = render(
        tissue, tumour, lesion, scanner, texture, bias_fields, rng, acquisition.tissue_contrast()
    )
    seg = np.zeros(full.shape, dtype=np.uint8)
    seg[brain_box][lesion.box] = lesion.seg
    return images, seg


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


def nifti_gz_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """A .nii.gz file as bytes, identical for identical input (gzip mtime 0, no file name)."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def write_case(case_dir: Path, case: str, images: np.ndarray, seg: np.ndarray) -> None:
    """Write one case's five files into ``case_dir`` (created): int16 images, uint8 seg."""
    case_dir.mkdir(parents=True)
    affine = voxel_affine(seg.shape)
    ints = np.clip(np.rint(images), 0, np.iinfo(np.int16).max).astype(np.int16)
    for name, data in (*zip(MODALITIES, ints), (SEGMENTATION, seg.astype(np.uint8))):
        (case_dir / f"{case}_{name}.nii.gz").write_bytes(nifti_gz_bytes(data, affine))


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
) -> list[str]:
    """Write a synthetic cohort in the BraTS 2018 layout under ``out_dir``; return the case names, sorted.

    ``acquisition`` is the site's scanner (:class:`Acquisition`); ``prefix`` starts every case name.
    ``out_dir`` must not exist or be empty. Everything is built in a hidden sibling folder
    (:func:`gliomil.files.atomic_directory`) and renamed into place at the end, so a failure leaves no
    half-written cohort. Output is byte-identical for the same (n_hgg, n_lgg, shape, seed)
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
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise GliomilError(f"{out_dir}: output folder already exists and is not empty")
    with atomic_directory(out_dir) as tmp_dir:
        jobs = []
        for grade, count in (("HGG", n_hgg), ("LGG", n_lgg)):
            (tmp_dir / grade).mkdir()
            width = max(3, len(str(count)))
            jobs += [
                _Job(grade, k, case_name(grade, k, width, prefix), int(seed), shape, tmp_dir, acquisition)
                for k in range(1, count + 1)
            ]
        cases = list(map_in_workers(_run_job, jobs, workers, progress="synthesize" if progress else None))
    return sorted(cases)
