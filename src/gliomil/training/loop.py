"""Training of one cross-validation fold: the loop, per-epoch validation, diagnostics and model selection.

Model selection and early stopping look only at the fold's inner-validation subjects; the
held-out test subjects are never loaded here. Scoring lives in :mod:`gliomil.evaluation.scoring`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from gliomil.data.bags import BagSet, DrawnBags, draw_bags, epoch_order
from gliomil.errors import GliomilError
from gliomil.evaluation.diagnostics import (
    LOGGED_KEYS,
    CollapseThresholds,
    collapse_warning,
    detect_collapse,
)
from gliomil.evaluation.metrics import epoch_metrics
from gliomil.evaluation.scoring import BagScores, mil_summary, score_bags, whole_bag_summary
from gliomil.model.checkpoint import save_checkpoint
from gliomil.model.mil import MILModel, ModelConfig
from gliomil.runtime import interrupts
from gliomil.runtime.device import autocast_dtype, default_device, precision_name
from gliomil.runtime.files import write_with
from gliomil.training.losses import (
    class_weights_from_counts,
    instance_grade_loss,
    instance_supervision_loss,
    mil_loss,
    pixel_supervision_loss,
    tumour_targets,
)
from gliomil.vocabulary import PIXEL_TARGETS

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes one fold's training run (params.yaml: top-level keys and ``train``).

    Defaults are the DSMIL reference's (60 epochs at lr 1e-4); params.yaml holds the CPU defaults.
    """

    seed: int = 42
    label_smoothing: float = 0.2
    use_class_weights: bool = True
    weighted_sampler: bool = False
    augment: bool = True
    augment_geometry: bool = False  # with augment: also a random in-plane rotation by k * 90 degrees and a flip
    epochs: int = 60
    batch_size: int = 4
    bag_size: int = 32
    lr: float = 1e-4
    lr_min: float = 5e-6
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 1e-3
    patience: int = 10
    instance_supervision: float = 0.0  # weight of the instance loss; 0 = off (training only, from the seg)
    instance_target: str = "tumour"  # tumour: instance_supervision_loss; grade: instance_grade_loss
    pixel_supervision: float = 0.0  # weight of the tumour-map loss on the encoder's tumour head; 0 = off
    pixel_target: str = "tumour"  # tumour: the whole tumour's map | regions: the three TUMOUR_REGIONS' maps
    tumour_blind: bool = False  # the confound control: the stages hand training bags without tumour slices
    select_metric: str = "loss"  # loss | auc, on the inner-validation split
    amp: bool = True
    eval_chunk: int = 256  # slices per encoder call when scoring whole bags
    top_k: int = 3
    collapse: CollapseThresholds = field(default_factory=CollapseThresholds)
    model: ModelConfig = field(default_factory=ModelConfig)

    @classmethod
    def from_settings(cls, top: dict, train: dict) -> TrainConfig:
        """From checked params values: ``top`` holds ``seed``, ``label_smoothing`` and ``use_class_weights``,
        ``train`` the ``train`` section with its ``model`` and ``diagnostics`` sub-sections."""
        train = dict(train)
        train.pop("plot_every", None)  # drawing figures is the reporter's business, not training's
        train.pop("threads", None)  # set for the whole process by the stage (gliomil.runtime.device.set_threads)
        diagnostics = dict(train.pop("diagnostics"))
        # The tumour head is part of the model only where something uses it.
        maps = PIXEL_TARGETS[train.get("pixel_target", "tumour")] if train.get("pixel_supervision", 0.0) > 0 else 0
        model = ModelConfig(**train.pop("model"), tumour_head=maps)
        return cls(
            **top, **train, top_k=diagnostics.pop("top_k"), collapse=CollapseThresholds(**diagnostics), model=model
        )


@dataclass
class FoldResult:
    best_epoch: int
    best: dict  # inner-validation metrics at the best epoch
    history: list[dict]  # one dict of logged values per epoch
    collapse_epochs: dict  # {"uniform": n, "one-hot": n} over training and validation bags
    class_weights: tuple[float, float] | None
    seconds: float
    diagnostics_seconds: float


# -- one step, one epoch, one validation ------------------------------------------------------------


def train_step(
    model: MILModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: LossFn,
    slices: torch.Tensor,
    bag_sizes: list[int],
    labels: torch.Tensor,
    dtype: torch.dtype | None,
    instance_supervision: float = 0.0,
    slice_tumour: torch.Tensor | None = None,
    instance_target: str = "tumour",
    pixel_supervision: float = 0.0,
    tumour_maps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, object]:
    """One optimiser step on a batch of bags: slices ``(sum N_b, 4, H, W)``, labels ``(B,)``.

    The encoder runs under ``dtype`` autocast (None: float32); the loss is computed in float32. With an
    ``instance_supervision`` weight > 0, that weight times :func:`~gliomil.training.losses.instance_supervision_loss`
    on the slices' tumour flags ``slice_tumour`` ``(sum N_b,)`` is added (``instance_target`` ``grade``:
    :func:`~gliomil.training.losses.instance_grade_loss` on the flags and the labels); with a ``pixel_supervision``
    weight > 0, that weight times :func:`~gliomil.training.losses.pixel_supervision_loss` on the slices' tumour maps
    ``(sum N_b, M, H, W)`` (and, with the tumour-moments stream, the same on its segmenter's logits and the whole
    tumour's interior, :meth:`~gliomil.model.moments.TumourMoments.pixel_targets`). With the tumour-moments stream,
    ``loss_fn`` of the stream's own logit is added too (:mod:`gliomil.model.moments` says why). Returns the loss and
    the model's :class:`~gliomil.model.mil.MILOutput`.
    """
    with torch.autocast(slices.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = model(slices, bag_sizes)
    second = None if out.max_instance_logits is None else out.max_instance_logits.float()
    loss = loss_fn(out.bag_logits.float(), second, labels)
    if out.moments_logits is not None:  # the moments stream's own loss, as each of DSMIL's streams has its own
        loss = loss + loss_fn(out.moments_logits.float(), None, labels)
    if instance_supervision > 0:
        if instance_target == "grade":
            supervision = instance_grade_loss(out.instance_logits, bag_sizes, slice_tumour, labels)
        else:
            supervision = instance_supervision_loss(slice_scores(out), bag_sizes, slice_tumour)
        loss = loss + instance_supervision * supervision
    if pixel_supervision > 0:
        loss = loss + pixel_supervision * pixel_supervision_loss(out.tumour_logits, tumour_maps)
        if out.pixel_logits is not None:  # the tumour-moments stream's segmenter: the tumour's interior, pixel by pixel
            targets = model.moments.pixel_targets(tumour_maps[:, :1])
            loss = loss + pixel_supervision * pixel_supervision_loss(out.pixel_logits, targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, out


def slice_scores(out) -> torch.Tensor:
    """What instance supervision orders within each bag: the instance scores, or (``abmil``) the log attention."""
    if out.instance_logits is not None:
        return out.instance_logits
    return torch.log(out.attention.float().clamp_min(1e-30))


@dataclass
class EpochOutput:
    """What one training epoch saw: its mean loss, the scores of the drawn bags and their slices' annotations."""

    loss: float
    scores: BagScores
    labels: np.ndarray  # (n_bags,)
    tumour_fraction: np.ndarray  # (sum N_b,)
    position: np.ndarray  # (sum N_b,)


def draw_batch(train_set: BagSet, batch: np.ndarray, config: TrainConfig, rng: np.random.Generator) -> DrawnBags:
    """The bags of one training step as ``config`` draws them (:func:`gliomil.data.bags.draw_bags`): its bag size,
    augmentation, context slices and the tumour maps its pixel target teaches."""
    return draw_bags(
        train_set,
        batch,
        config.bag_size,
        rng,
        config.augment,
        config.augment_geometry,
        config.model.context_slices,
        PIXEL_TARGETS[config.pixel_target],
    )


def train_epoch(
    model: MILModel,
    optimizer,
    scaler,
    loss_fn: LossFn,
    train_set: BagSet,
    rng: np.random.Generator,
    config: TrainConfig,
    device: torch.device,
    dtype: torch.dtype | None,
    epoch: int = 0,
) -> EpochOutput:
    """One pass over the epoch's patients (:func:`~gliomil.data.bags.epoch_order`), one random bag each.

    A SIGINT/SIGTERM stops it after the current step (:func:`gliomil.runtime.interrupts.check`)."""
    model.train()
    losses, parts, tumour, positions, labels_seen = [], [], [], [], []
    order = epoch_order(train_set.labels, rng, config.weighted_sampler)
    for start in range(0, len(order), config.batch_size):
        batch = order[start : start + config.batch_size]
        slices, picks, tumour_maps = draw_batch(train_set, batch, config, rng)
        labels = torch.from_numpy(train_set.labels[batch]).to(device)
        slice_tumour = None
        if config.instance_supervision > 0:
            fractions = np.concatenate([train_set.tumour_fraction[i][p] for i, p in zip(batch, picks)])
            slice_tumour = torch.from_numpy(tumour_targets(fractions)).to(device)
        loss, out = train_step(
            model,
            optimizer,
            scaler,
            loss_fn,
            torch.from_numpy(slices).to(device),
            [len(p) for p in picks],
            labels,
            dtype,
            config.instance_supervision,
            slice_tumour,
            config.instance_target,
            config.pixel_supervision,
            None if tumour_maps is None else torch.from_numpy(tumour_maps).to(device),
        )
        interrupts.check(f"during a training step of epoch {epoch}")
        losses.append(loss.item() * len(batch))
        parts.append(BagScores.from_output(out, model.prediction))
        tumour.extend(train_set.tumour_fraction[i][p] for i, p in zip(batch, picks))
        positions.extend(train_set.position[i][p] for i, p in zip(batch, picks))
        labels_seen.append(train_set.labels[batch])
    return EpochOutput(
        sum(losses) / len(order),
        BagScores.concat(parts),
        np.concatenate(labels_seen),
        np.concatenate(tumour),
        np.concatenate(positions),
    )


def validate(
    model: MILModel,
    val_set: BagSet,
    loss_fn: LossFn,
    config: TrainConfig,
    device: torch.device,
    dtype: torch.dtype | None,
) -> tuple[BagScores, float]:
    """Whole-bag scores of the inner-validation patients and their loss (the training objective)."""
    scores = score_bags(model, val_set.bags, device, config.eval_chunk, dtype)
    second = None if scores.max_instance_logits is None else torch.from_numpy(scores.max_instance_logits)
    loss = loss_fn(torch.from_numpy(scores.bag_logits), second, torch.from_numpy(val_set.labels)).item()
    return scores, loss


def epoch_record(epoch: int, lr: float, metrics: dict[str, dict], mil: dict[str, dict]) -> dict:
    """The values logged for one epoch: ``epoch``, ``lr``, then per split ``<split>/<metric>`` and
    ``<split>/mil/<diagnostic>`` for each of :data:`~gliomil.evaluation.diagnostics.LOGGED_KEYS` the model's
    aggregator has."""
    record = {"epoch": epoch, "lr": lr}
    for split in ("train", "val"):
        record.update({f"{split}/{k}": v for k, v in metrics[split].items()})
        record.update({f"{split}/mil/{k}": mil[split][k] for k in LOGGED_KEYS if k in mil[split]})
    return record


class BestCheckpoint:
    """Model selection and early stopping on the inner-validation metrics of each epoch.

    ``select_metric``: ``loss`` (lower is better) or ``auc`` (higher is better, ties broken by lower loss).
    """

    def __init__(self, select_metric: str, patience: int):
        self.select_metric = select_metric
        self.patience = patience
        self.best: dict | None = None
        self.epoch = 0
        self.since_best = 0

    def _key(self, metrics: dict) -> tuple:
        if self.select_metric == "loss":
            return (-metrics["loss"],)
        auc = metrics["auc"]
        return (-math.inf if math.isnan(auc) else auc, -metrics["loss"])

    def update(self, epoch: int, metrics: dict) -> bool:
        """Record an epoch's metrics; True when it is the new best."""
        if self.best is None or self._key(metrics) > self._key(self.best):
            self.best, self.epoch, self.since_best = metrics, epoch, 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.since_best >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "epoch": self.epoch, "since_best": self.since_best}

    def restore(self, state: dict) -> None:
        self.best, self.epoch, self.since_best = state["best"], state["epoch"], state["since_best"]


# -- resuming an interrupted fold -----------------------------------------------------------------

RESUME_FORMAT = 1


def save_resume_state(
    path: Path, epoch: int, run_key: str, modules: dict, rng: np.random.Generator, loop: dict
) -> None:
    """Everything needed to continue after ``epoch`` exactly as if never stopped, written atomically to ``path``.

    ``modules``: the model, optimizer, scheduler and gradient scaler (their ``state_dict``); ``loop``: the plain
    values of the loop (history, model selection, collapse counts, seconds), stored as JSON text, which restores
    every float bit for bit. ``run_key`` identifies the run's inputs (:func:`load_resume_state`).
    """
    state = {
        "format": RESUME_FORMAT,
        "run_key": run_key,
        "epoch": epoch,
        **{name: module.state_dict() for name, module in modules.items()},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "plain": json.dumps({"numpy_rng": rng.bit_generator.state, **loop}, default=_plain),
    }
    write_with(path, lambda f: torch.save(state, f))


def _plain(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"cannot store {type(value).__name__} in a resume state")


def load_resume_state(path: Path, run_key: str, log: Callable[[str], None] = print) -> dict | None:
    """The state :func:`save_resume_state` wrote, or None when there is none to continue from.

    A state of other inputs (params, split, data, code, threads or device: another ``run_key``), of another
    format, or that cannot be read is set aside with one line saying why, and training starts from epoch 1.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        why = None
        if state.get("format") != RESUME_FORMAT:
            why = f"it has format {state.get('format')}, this code reads {RESUME_FORMAT}"
        elif state.get("run_key") != run_key:
            why = "it was saved by a run of other params, data, code, threads or device"
    except Exception as exc:  # a torn or foreign file: starting again is always safe
        why = f"it cannot be read ({type(exc).__name__}: {exc})"
    if why is not None:
        log(f"{path}: not resuming: {why}; training starts from epoch 1")
        return None
    state.update(json.loads(state.pop("plain")))
    return state


def _restore(state: dict, modules: dict, rng: np.random.Generator) -> None:
    for name, module in modules.items():
        module.load_state_dict(state[name])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    rng.bit_generator.state = state["numpy_rng"]


# -- the loop -------------------------------------------------------------------------------------


def _label_one_alone(tumour_map: np.ndarray) -> bool:
    """Whether maps (S, 3, H, W) hold tumour whose core is all of it and none of it enhancing: label 1 alone."""
    whole, core, enhancing = tumour_map[:, 0], tumour_map[:, 1], tumour_map[:, 2]
    return bool(whole.any()) and np.array_equal(whole, core) and not enhancing.any()


def check_segmentations(train_set: BagSet, param: str = "train.instance_supervision", regions: bool = False) -> None:
    """Instance and pixel supervision learn from the segmentation: every training subject needs one (known tumour
    fractions; with ``train.pixel_supervision``, its tumour maps). With ``regions`` (``train.pixel_target:
    regions``) its labels must tell the regions apart: a seg holding tumour but no oedema (2) and no enhancing (4)
    label is what a binary mask read as label 1 looks like, and would teach "all core, never enhancing". Raises
    :class:`GliomilError` naming ``param`` and the first subject at fault."""
    for i, subject in enumerate(train_set.subject_ids):
        tumour_map = None if train_set.tumour_maps is None else train_set.tumour_maps[i]
        if np.isnan(train_set.tumour_fraction[i]).any() or (train_set.tumour_maps is not None and tumour_map is None):
            raise GliomilError(
                f"{param} > 0 needs a segmentation for every training subject; {subject} has "
                f"none (set {param}: 0 to train from the images alone)"
            )
        if regions and _label_one_alone(tumour_map):
            raise GliomilError(
                f"train.pixel_target regions needs BraTS labels (1 core, 2 oedema, 4 enhancing); the segmentation "
                f"of {subject} holds label 1 alone, as a binary mask does (set train.pixel_target: tumour)"
            )


def train_fold(
    config: TrainConfig,
    fold: int,
    train_set: BagSet,
    val_set: BagSet,
    checkpoint_path: Path,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[int, dict, BagScores], None] | None = None,
    state_path: Path | None = None,
    resume: dict | None = None,
    run_key: str = "",
) -> FoldResult:
    """Train one fold and save the best checkpoint (by inner validation) to ``checkpoint_path``.

    ``on_epoch(epoch, logged, val_scores)`` is called after every epoch (logging, plots). A SIGINT or SIGTERM
    stops training at the next step or epoch end with :class:`~gliomil.errors.Interrupted`.
    With ``state_path``, the state after each epoch (and its ``on_epoch``) is saved there
    (:func:`save_resume_state`); ``resume``, such a state (:func:`load_resume_state`), continues after its epoch,
    and the fold ends bit-identical to an uninterrupted run: same checkpoint, history and result.
    Reproducible: the same config, fold and data give a bit-identical checkpoint on one machine.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed * 1000 + fold)
    rng = np.random.default_rng([config.seed, fold])
    device = default_device()
    dtype = autocast_dtype(device, config.amp)
    log(f"fold {fold}: device {device.type}, precision {precision_name(dtype)}")

    if config.instance_supervision > 0:
        check_segmentations(train_set)
    if config.pixel_supervision > 0:
        if train_set.tumour_maps is None:
            raise ValueError("train.pixel_supervision > 0 needs a training set loaded with its tumour maps")
        check_segmentations(train_set, "train.pixel_supervision", regions=config.pixel_target == "regions")
    model = config.model.build().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr_min)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    class_weights = None
    if config.use_class_weights:
        class_weights = class_weights_from_counts(*train_set.class_counts())
        log(f"fold {fold}: class weights: LGG={class_weights[0]:.4f}, HGG={class_weights[1]:.4f}")
    loss_fn = partial(mil_loss, label_smoothing=config.label_smoothing, class_weights=class_weights)

    selection = BestCheckpoint(config.select_metric, config.patience)
    history, collapse_epochs, diagnostics_seconds = [], {"uniform": 0, "one-hot": 0}, 0.0
    modules = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    first_epoch = 1
    if resume is not None:
        _restore(resume, modules, rng)
        selection.restore(resume["selection"])
        history, collapse_epochs = resume["history"], resume["collapse_epochs"]
        diagnostics_seconds, started = resume["diagnostics_seconds"], started - resume["seconds"]
        first_epoch = resume["epoch"] + 1
        if not checkpoint_path.is_file():
            raise GliomilError(f"{checkpoint_path}: the best checkpoint of the state to resume is missing")
        log(f"fold {fold}: resuming after epoch {resume['epoch']} of {config.epochs}")
    for epoch in range(first_epoch, config.epochs + 1):
        if selection.should_stop:  # a resumed fold that had stopped early
            break
        seen = train_epoch(model, optimizer, scaler, loss_fn, train_set, rng, config, device, dtype, epoch)
        scheduler.step()
        val_scores, val_loss = validate(model, val_set, loss_fn, config, device, dtype)

        tick = time.perf_counter()
        mil = {
            "train": mil_summary(seen.scores, seen.tumour_fraction, seen.position, config.top_k),
            "val": whole_bag_summary(val_scores, val_set, config.top_k),
        }
        for split, summary in mil.items():
            kind = detect_collapse(summary, config.collapse)
            if kind is not None:
                collapse_epochs[kind] += 1
                log(collapse_warning(kind, fold, epoch, summary) + f" [{split} bags]")
        diagnostics_seconds += time.perf_counter() - tick

        metrics = {
            "train": {"loss": seen.loss, **epoch_metrics(seen.labels, seen.scores.probabilities)},
            "val": {"loss": val_loss, **epoch_metrics(val_set.labels, val_scores.probabilities)},
        }
        logged = epoch_record(epoch, optimizer.param_groups[0]["lr"], metrics, mil)
        history.append(logged)

        improved = selection.update(epoch, metrics["val"])
        if improved:
            save_checkpoint(
                model,
                config.model,
                checkpoint_path,
                fold=fold,
                epoch=epoch,
                class_weights=list(class_weights) if class_weights else None,
            )
        val = metrics["val"]
        # "k/n" means one thing everywhere, as in the fold table's hgg_detected: correct HGG / true HGG at 0.5.
        correct_hgg = int(((val_scores.probabilities >= 0.5) & (np.asarray(val_set.labels) == 1)).sum())
        attention = ""
        if "mean_normalized_entropy" in mil["val"]:
            attention = (
                f" | attention entropy {mil['val']['mean_normalized_entropy']:.3f} tumour lift "
                f"{mil['val']['attention_tumour_lift']:.2f}"
            )
        log(
            f"fold {fold} epoch {epoch:3d}: train loss {seen.loss:.4f} auc {metrics['train']['auc']:.3f} | "
            f"val loss {val_loss:.4f} auc {val['auc']:.3f} f1 {val['f1']:.3f} "
            f"HGG recall {correct_hgg}/{val['true_hgg']} ({val['predicted_hgg']} predicted HGG)"
            + attention
            + (" *" if improved else "")
        )
        if on_epoch is not None:
            on_epoch(epoch, logged, val_scores)
        if state_path is not None:
            loop = {
                "history": history,
                "selection": selection.state(),
                "collapse_epochs": collapse_epochs,
                "diagnostics_seconds": diagnostics_seconds,
                "seconds": time.perf_counter() - started,
            }
            save_resume_state(state_path, epoch, run_key, modules, rng, loop)
        interrupts.check(f"in fold {fold} after epoch {epoch}")
        if selection.should_stop:
            log(
                f"fold {fold}: early stop after epoch {epoch} (no inner-validation improvement in "
                f"{config.patience} epochs)"
            )
            break

    return FoldResult(
        selection.epoch,
        selection.best,
        history,
        collapse_epochs,
        class_weights,
        time.perf_counter() - started,
        diagnostics_seconds,
    )
