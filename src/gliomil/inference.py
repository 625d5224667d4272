"""Scoring patients with a trained DSMIL: device and precision, checkpoints, whole-bag scores, predictions.

Used by the training loop (inner validation), the evaluate stage and anything that scores new patients;
it imports nothing from training.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from . import interrupts
from .data import BagSet
from .diagnostics import batch_diagnostics, summarize
from .files import write_with
from .model import DSMIL, ModelConfig
from .vocabulary import GRADES


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads: int) -> int:
    """Pin torch's CPU threads (0 keeps torch's default, one per physical core); returns the number in use.

    The thread count changes how sums are split, so 1 and 2 threads give different checkpoints (measured by
    benchmarks/noise_floor.py): it belongs to what a reproducible run fixes.
    """
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def make_deterministic() -> None:
    """The same inputs give the same bits on a GPU too: cuDNN's autotuner off (it picks kernels by timing),
    deterministic algorithms where they exist (a one-time warning names an op that has none), and cuBLAS's fixed
    workspace, which must be set before CUDA starts (``CUBLAS_WORKSPACE_CONFIG``; a value set by the user is kept).
    On the CPU none of this changes a result. Called by every stage that trains or scores, before any model exists.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for plain float32.

    CUDA: float16 (with gradient scaling). CPU: bfloat16 only where the CPU computes it natively
    (measured 1.6x faster than float32 for this encoder on such a CPU; elsewhere it is emulated and
    slower), so the choice depends on the machine, never on a timing.
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if _cpu_has_native_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """How :func:`autocast_dtype`'s choice is printed and recorded."""
    return {None: "float32", torch.bfloat16: "bfloat16 autocast", torch.float16: "float16 autocast"}[dtype]


# -- checkpoints ----------------------------------------------------------------------------------


def save_checkpoint(model: DSMIL, config: ModelConfig, path: Path, **record) -> None:
    """Weights, the :class:`ModelConfig` that rebuilds them and ``record`` (plain values: fold, epoch, ...).

    Serialised in memory, then written atomically: a full disk leaves the previous checkpoint whole and raises
    :class:`~gliomil.errors.OutputError` (torch.save straight to the file left a torn one and a raw error).
    """
    write_with(path, lambda f: torch.save({"model": model.state_dict(), "model_config": asdict(config), **record}, f))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[DSMIL, dict]:
    """Rebuild the model saved by :func:`save_checkpoint` in eval mode (``weights_only=True``: no code is unpickled)."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    model = ModelConfig(**checkpoint["model_config"]).build()
    model.load_state_dict(checkpoint["model"], strict=True)
    return model.to(device).eval(), checkpoint


# -- scores ---------------------------------------------------------------------------------------

_ARRAYS = ("bag_logits", "max_instance_logits", "instance_logits", "attention", "critical", "bag_sizes")


@dataclass
class BagScores:
    """Model outputs for n bags. Per-slice arrays are flat, bag after bag (``bag_sizes`` long)."""

    bag_logits: np.ndarray  # (n,)
    max_instance_logits: np.ndarray  # (n,)
    instance_logits: np.ndarray  # (sum N,)
    attention: np.ndarray  # (sum N,)
    critical: np.ndarray  # (n,) index within the bag
    bag_sizes: np.ndarray  # (n,)
    prediction: str = "bag_stream"  # the model's rule, gliomil.model.PREDICTIONS

    @property
    def probabilities(self) -> np.ndarray:
        """(n,) HGG probability per bag, by the model's ``prediction`` rule."""
        bag = expit(self.bag_logits)
        if self.prediction == "bag_stream":
            return bag
        return 0.5 * (bag + expit(self.max_instance_logits))

    def attention_per_bag(self) -> list[np.ndarray]:
        """The flat attention split into one (N_b,) array per bag."""
        return np.split(self.attention, np.cumsum(self.bag_sizes)[:-1])

    @classmethod
    def concat(cls, parts: list[BagScores]) -> BagScores:
        return cls(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _ARRAYS), prediction=parts[0].prediction
        )

    @classmethod
    def from_output(cls, out, prediction: str) -> BagScores:
        """From a :class:`gliomil.model.MILOutput` (any device, any float dtype)."""
        return cls(
            *(
                t.detach().float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()
                for t in (getattr(out, name) for name in _ARRAYS)
            ),
            prediction=prediction,
        )


def score_bags(
    model: DSMIL, bags: list[np.ndarray], device: torch.device, chunk: int = 256, dtype: torch.dtype | None = None
) -> BagScores:
    """Score whole bags (every slice, each bag ``(N, 4, H, W)``) deterministically, in eval mode."""
    model.eval()
    parts = []
    for bag in bags:
        interrupts.check("while scoring")
        slices = torch.from_numpy(np.asarray(bag, dtype=np.float32)).to(device)
        parts.append(BagScores.from_output(model.score_bag(slices, chunk, dtype), model.prediction))
    return BagScores.concat(parts)


def mil_summary(scores: BagScores, tumour_fraction: np.ndarray, positions: np.ndarray, top_k: int) -> dict:
    """Summary of the attention/instance diagnostics of scored bags (see :mod:`gliomil.diagnostics`)."""
    return summarize(
        batch_diagnostics(
            scores.attention,
            scores.instance_logits,
            bag_sizes=scores.bag_sizes,
            tumour_fraction=tumour_fraction,
            slice_positions=positions,
            top_k=top_k,
        )
    )


def whole_bag_summary(scores: BagScores, bag_set: BagSet, top_k: int) -> dict:
    """:func:`mil_summary` of bags scored whole by :func:`score_bags`, with the slices' tumour fractions."""
    return mil_summary(scores, np.concatenate(bag_set.tumour_fraction), np.concatenate(bag_set.position), top_k)


def patient_predictions(bag_set: BagSet, scores: BagScores, threshold: float, top: int = 3) -> pd.DataFrame:
    """One row per patient: grade, probability, predictions at 0.5 and at ``threshold``, critical and most
    attended slices."""
    attention = scores.attention_per_bag()
    probabilities = scores.probabilities
    return pd.DataFrame(
        {
            "subject_id": bag_set.subject_ids,
            "grade": np.array(GRADES)[bag_set.labels],
            "label": bag_set.labels,
            "probability": probabilities.round(6),
            "predicted_at_0.5": (probabilities >= 0.5).astype(int),
            "predicted_at_youden": (probabilities >= threshold).astype(int),
            "critical_slice": scores.critical,
            "most_attended_slices": [" ".join(map(str, np.argsort(-a, kind="stable")[:top])) for a in attention],
        }
    )
