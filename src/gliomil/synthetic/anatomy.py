"""Normal brain anatomy of the built-in cohort: the MNI152 2009 template, warped per patient.

The template is the ICBM 2009a nonlinear symmetric MNI152 brain (Fonov et al. 2009, NeuroImage 47:S102;
2011, NeuroImage 54:313) as nilearn ships it inside its wheel: a skull-stripped T1 and grey- and
white-matter probability maps, 197 x 233 x 189 voxels of 1 mm. It is read from the installed package and
never from the internet. From it, once per process (:func:`atlas`):

* brain: the T1's non-zero voxels; CSF = brain - GM - WM (sulci, fissures, cisterns and ventricles);
* ventricles: the two lateral ventricles, the dark (CSF on T1) deep components near the MNI coordinates
  (+-14, -15, 14) mm;
* periventricular: the share of white matter within a few millimetres of the ventricles (the caps and
  rim that FLAIR shows bright);
* vascular: what enhances on T1ce in a normal brain: the choroid plexus (the glomus in each ventricle's
  atrium), the dura (the brain's outer 1.5 mm, and the falx between the hemispheres) and vessels in the
  sulcal CSF.

Each patient is the template under :class:`Pose` (scaling, rotation, shift), a smooth random displacement
and the tumour's mass effect (:func:`warp`), sampled at the voxel centres of a :class:`gliomil.synthetic.cohort.Grid`
after a Gaussian pre-filter matched to the grid's voxel size (partial volume, no aliasing).

World coordinates here are millimetres, RAS, with the origin at the centre of the BraTS field of view;
:data:`TEMPLATE_CENTRE` (MNI mm) is placed there, so the brain sits in the middle of the field of view.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from gliomil.errors import GliomilError

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
CHANNELS = ("brain", "gm", "wm", "ventricles", "periventricular", "vascular")
TEMPLATE_CENTRE = np.array([0.0, -17.0, 6.0])  # MNI mm: middle of the brain's bounding box (cerebellum included)
BRAIN_HEIGHT_MM = 154.0  # the template brain's vertical extent
LATERAL_VENTRICLES_MNI = ((-14.0, -15.0, 14.0), (14.0, -15.0, 14.0))
VESSEL_SEED = 2009  # the fixed pattern of sulcal vessels on the template


def template_folder() -> Path:
    """Folder of nilearn's bundled MNI152 2009 files, found without importing nilearn (slow, and not needed)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise GliomilError("the built-in cohort needs nilearn (pip install -r requirements.txt): it is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [name for name in TEMPLATE_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise GliomilError(f"{folder}: nilearn's MNI152 template files are missing ({', '.join(missing)})")
    return folder


@dataclass(frozen=True)
class Atlas:
    """Template channels on the template's 1 mm grid, cropped to the brain.

    channels: float32 (X, Y, Z, C), C in :data:`CHANNELS` order, each a fraction in [0, 1] (brain, gm and wm
              are fractions of the voxel; ventricles, periventricular and vascular of the voxel too).
              Zero on a margin of at least two voxels on every side.
    origin:   (3,) MNI mm of voxel (0, 0, 0).
    sites:    (N, 3) MNI mm of white-matter voxels deep in a cerebral hemisphere: where a glioma may start.
    support:  bool (X, Y, Z), the voxels within two of any non-zero channel value (sampling skips the rest).
    crown:    (K, 3) MNI mm of the brain's outer surface within 25 mm of its top: what must fit under the field
              of view's upper edge.
    """

    channels: np.ndarray
    origin: np.ndarray
    sites: np.ndarray
    support: np.ndarray
    crown: np.ndarray


@functools.cache
def template() -> Atlas:
    """The derived template channels at 1 mm (computed once per process: about 2 s)."""
    folder = template_folder()
    images = {name: nib.load(folder / file) for name, file in TEMPLATE_FILES.items()}
    affine = images["t1"].affine
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise GliomilError(f"{folder / TEMPLATE_FILES['t1']}: expected a 1 mm RAS template, affine {affine.tolist()}")
    t1, gm, wm = (np.asarray(images[name].dataobj) for name in ("t1", "gm", "wm"))
    # Everything below on the brain's bounding box plus a margin: half the template's voxels.
    box = tuple(slice(max(int(i.min()) - 3, 0), int(i.max()) + 4) for i in np.nonzero(t1))
    t1, gm, wm = (np.asarray(x[box], dtype=np.float32) / 255 for x in (t1, gm, wm))
    origin = affine[:3, 3] + np.array([b.start for b in box])
    mni = np.ogrid[tuple(slice(0, n) for n in t1.shape)]
    mni = [(axis + o).astype(np.float32) for axis, o in zip(mni, origin)]  # broadcastable x, y, z (mm)
    mask = t1 > 0
    csf = np.clip(mask - gm - wm, 0, 1)
    depth = ndimage.distance_transform_edt(mask).astype(np.float32)  # mm to the outside of the brain

    # Lateral ventricles: CSF that is dark on T1 and deep, the components near their MNI positions.
    components, _ = ndimage.label((csf > 0.5) & (t1 < 0.45) & (depth > 10))
    ventricle_mask = np.zeros_like(mask)
    for point in LATERAL_VENTRICLES_MNI:
        index = tuple(np.round(np.array(point) - origin).astype(int))
        near = components[tuple(slice(i - 6, i + 7) for i in index)]
        labels, counts = np.unique(near[near > 0], return_counts=True)
        if len(labels) == 0:
            raise GliomilError(f"{folder}: no lateral ventricle near MNI {point}: not the MNI152 2009 template")
        ventricle_mask |= components == labels[np.argmax(counts)]
    ventricles = csf * ndimage.binary_dilation(ventricle_mask)

    # The periventricular rim, within 8 mm of the ventricles (distances on their bounding box only).
    near = tuple(slice(max(int(i.min()) - 10, 0), int(i.max()) + 11) for i in np.nonzero(ventricle_mask))
    from_ventricles = np.full(mask.shape, np.inf, dtype=np.float32)
    from_ventricles[near] = ndimage.distance_transform_edt(~ventricle_mask[near])
    periventricular = wm * np.exp(-np.maximum(from_ventricles - 1, 0) / 2.5) * (from_ventricles <= 8)

    # Normal enhancement: choroid plexus (the glomus, in each atrium), dura and falx, sulcal vessels.
    choroid = np.zeros_like(csf)
    for side in (-1, 1):
        atrium = ventricle_mask & (mni[1] < -30) & (np.sign(mni[0]) == side)
        centre = [float(np.broadcast_to(axis, mask.shape)[atrium].mean()) for axis in mni]
        near_centre = sum((axis - c) ** 2 for axis, c in zip(mni, centre)) < 6.0**2
        choroid = np.maximum(choroid, ventricles * near_centre)
    dura = mask * (depth <= 1.5) * np.float32(0.6)
    falx = csf * (np.abs(mni[0]) < 1.5) * (mni[2] > 10) * (depth > 3)
    rng = np.random.default_rng(VESSEL_SEED)
    vessel_field = ndimage.gaussian_filter(rng.standard_normal(mask.shape, dtype=np.float32), 1.5)
    vessels = (csf - ventricles) * (vessel_field > 2.2 * vessel_field.std())
    vascular = np.maximum.reduce([choroid, dura, falx, vessels])

    sites = (wm > 0.6) & (depth > 20) & (np.abs(mni[0]) > 15) & (mni[2] > -10) & (mni[1] > -85) & (mni[1] < 55)
    top = float(np.broadcast_to(mni[2], mask.shape)[mask].max())
    crown = mask & (depth < 1.5) & (mni[2] > top - 25)
    channels = np.stack([mask.astype(np.float32), gm, wm, ventricles, periventricular, vascular], axis=-1)
    channels = np.pad(channels, [(2, 2)] * 3 + [(0, 0)])  # zero margin: samples outside the template read 0
    return Atlas(
        channels=np.ascontiguousarray(channels, dtype=np.float32),
        origin=origin - 2,
        sites=np.argwhere(sites) + origin,
        support=_support(channels),
        crown=np.argwhere(crown) + origin,
    )


def _support(channels: np.ndarray) -> np.ndarray:
    return ndimage.binary_dilation(channels[..., 0] > 0, iterations=2)


@functools.lru_cache(maxsize=2)
def atlas(spacing: tuple[float, float, float]) -> Atlas:
    """The template channels pre-filtered for sampling at voxels of ``spacing`` mm: a Gaussian of the width a
    voxel of that size adds to the template's own 1 mm (partial volume without aliasing)."""
    base = template()
    sigma = [np.sqrt(max(s**2 - 1.0, 0.0) / 12) for s in spacing] + [0.0]
    channels = ndimage.gaussian_filter(base.channels, sigma, truncate=3.0) if max(sigma) > 0 else base.channels
    channels = np.ascontiguousarray(channels, dtype=np.float32)
    return Atlas(channels=channels, origin=base.origin, sites=base.sites, support=_support(channels), crown=base.crown)


# -- one patient -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pose:
    """How one patient's brain differs from the template by a linear map: world = shift + rotation @ (scale *
    (mni - TEMPLATE_CENTRE)).

    scale:    (3,) per axis of the template (left-right, posterior-anterior, inferior-superior).
    rotation: (3, 3) rotation matrix.
    shift:    (3,) world mm of the template centre.
    """

    scale: np.ndarray
    rotation: np.ndarray
    shift: np.ndarray

    @property
    def height(self) -> float:
        """Vertical extent of the brain in mm (ignoring rotation)."""
        return BRAIN_HEIGHT_MM * float(self.scale[2])

    def to_world(self, mni: np.ndarray) -> np.ndarray:
        """World mm (..., 3) of template points ``mni`` (..., 3) under this pose (no deformation)."""
        return self.shift + (np.asarray(mni) - TEMPLATE_CENTRE) * self.scale @ self.rotation.T

    def brain_box(self, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) world mm corners holding the posed template brain, plus ``margin`` mm."""
        base = template()
        corners = np.array(
            [[base.origin[i] + (0, base.channels.shape[i] - 1)[(k >> i) & 1] for i in range(3)] for k in range(8)]
        )
        world = self.to_world(corners)
        return world.min(axis=0) - margin, world.max(axis=0) + margin


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Rotation matrix (3, 3) about z (yaw), then x (pitch), then y (roll); angles in degrees."""
    a, b, c = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return ry @ rx @ rz


def sample_pose(rng: np.random.Generator, ceiling: float) -> Pose:
    """Draw a patient's brain size, shape, orientation and position in the field of view.

    ceiling: world z (mm) the top of the brain must stay below. A brain that would reach above it is moved down
    (as BraTS volumes hold the vertex and may cut the brainstem, never the other way round).
    """
    pose = Pose(
        scale=rng.uniform(0.86, 0.98) * rng.uniform(0.96, 1.04, size=3),
        rotation=rotation(rng.uniform(-8, 8), rng.uniform(-6, 6), rng.uniform(-4, 4)),
        shift=np.array([rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-3, 2)]),
    )
    top = float(pose.to_world(template().crown)[:, 2].max())
    if top > ceiling:
        pose = Pose(scale=pose.scale, rotation=pose.rotation, shift=pose.shift - [0.0, 0.0, top - ceiling])
    return pose


def sample_site(rng: np.random.Generator, pose: Pose) -> np.ndarray:
    """World mm (3,) of a point deep in a cerebral hemisphere's white matter, where a glioma starts."""
    sites = template().sites
    point = sites[rng.integers(len(sites))] + rng.uniform(-0.5, 0.5, size=3)
    return pose.to_world(point)


@dataclass
class Tissue:
    """Tissue of each voxel, float32 (X, Y, Z) fractions.

    brain: partial-volume brain fraction; mask: bool, voxel centre inside the brain (brain >= 0.5).
    csf + gm + wm = 1 inside the mask (fractions of the brain part of the voxel).
    ventricles: the CSF share that is lateral ventricle; periventricular: the WM share of the bright rim
    around them; vascular: the share that enhances on T1ce in a normal brain.
    """

    brain: np.ndarray
    mask: np.ndarray
    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    ventricles: np.ndarray
    periventricular: np.ndarray
    vascular: np.ndarray


def warp(grid, pose: Pose, displacement: np.ndarray, mass_centre: np.ndarray, mass_radius: float) -> Tissue:
    """The template's tissue on the voxel centres of ``grid`` (a :class:`gliomil.synthetic.cohort.Grid`) for one
    patient.

    displacement: float32 (3, X, Y, Z) mm, a smooth random deformation (each voxel shows the tissue that the
    pose alone would put ``displacement`` mm away). mass_centre (3,) world mm and mass_radius mm: a tumour's
    mass effect, an incompressible expansion that pushes the tissue at distance r from the centre to
    cbrt(r^3 + mass_radius^3); the tissue it displaced is inside that radius.
    """
    d = [(grid.axes[i] - mass_centre[i]).astype(np.float32) for i in range(3)]
    d = np.broadcast_arrays(d[0][:, None, None], d[1][None, :, None], d[2][None, None, :])
    r = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    source_r = np.cbrt(np.maximum(r**3 - np.float32(mass_radius) ** 3, 0))
    pull = np.where(r > 0, source_r / np.maximum(r, 1e-6), 0).astype(np.float32)
    world = [mass_centre[i] + d[i] * pull + displacement[i] for i in range(3)]
    # Template voxel coordinates: mni = TEMPLATE_CENTRE + rotation^T (world - shift) / scale.
    base = atlas(tuple(float(s) for s in grid.spacing))
    rel = [w - np.float32(s) for w, s in zip(world, pose.shift)]
    r_t = pose.rotation.T
    coords = [
        (r_t[k, 0] * rel[0] + r_t[k, 1] * rel[1] + r_t[k, 2] * rel[2]) / pose.scale[k]
        + (TEMPLATE_CENTRE[k] - base.origin[k])
        for k in range(3)
    ]
    # Only the points near the template brain are interpolated (about half of the box): the rest read 0.
    size = base.support.shape
    nearest = np.zeros(r.size, dtype=np.int64)
    for c, n in zip(coords, size):
        nearest = nearest * n + np.clip(np.rint(np.ravel(c)), 0, n - 1).astype(np.int64)
    near = np.flatnonzero(np.take(base.support.ravel(), nearest))
    sampled = trilinear(base.channels, [np.ravel(c)[near] for c in coords])
    channels = []
    for values in sampled:
        channel = np.zeros(r.size, dtype=np.float32)
        channel[near] = values
        channels.append(channel.reshape(r.shape))
    brain, gm, wm, ventricles, periventricular, vascular = channels
    inside = brain > 1e-3
    share = np.where(inside, 1 / np.maximum(brain, 1e-3), 0).astype(np.float32)
    gm, wm = np.minimum(gm * share, 1), np.minimum(wm * share, 1)
    wm = np.minimum(wm, 1 - gm)
    return Tissue(
        brain=np.minimum(brain, 1),
        mask=brain >= 0.5,
        csf=(1 - gm - wm) * inside,
        gm=gm,
        wm=wm,
        ventricles=np.minimum(ventricles * share, 1),
        periventricular=np.minimum(periventricular * share, wm),
        vascular=np.minimum(vascular * share, 1),
    )


def trilinear(volume: np.ndarray, coords) -> list[np.ndarray]:
    """Sample every channel of ``volume`` (X, Y, Z, C) at voxel coordinates ``coords`` (three arrays of one
    shape S), linearly; points outside the volume read its edge voxels (zero here). Returns C float32 arrays of
    shape S. All channels share one set of indices and weights: several times faster than one
    ``scipy.ndimage.map_coordinates`` per channel."""
    shape = np.shape(coords[0])
    size = volume.shape[:3]
    flat = volume.reshape(-1, volume.shape[3])
    index = np.zeros(int(np.prod(shape)), dtype=np.int64)
    fractions = []
    for c, n in zip(coords, size):
        c = np.clip(np.ravel(c).astype(np.float32), 0, n - 1)
        low = np.minimum(c.astype(np.int64), n - 2)
        fractions.append(c - low)
        index = index * n + low
    strides = (size[1] * size[2], size[2], 1)
    out = np.zeros((index.size, volume.shape[3]), dtype=np.float32)
    fx, fy, fz = fractions
    for dx, wx in ((0, 1 - fx), (1, fx)):
        for dy, wy in ((0, 1 - fy), (1, fy)):
            wxy = wx * wy
            for dz, wz in ((0, 1 - fz), (1, fz)):
                offset = dx * strides[0] + dy * strides[1] + dz
                out += (wxy * wz)[:, None] * np.take(flat, index + offset, axis=0)
    return [np.ascontiguousarray(out[:, k].reshape(shape)) for k in range(volume.shape[3])]
