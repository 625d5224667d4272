"""Per-epoch reporting of a training fold: DVCLive metrics and the figures of :mod:`gliomil.evaluation.plots`."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dvclive import Live

from gliomil.data.bags import BagSet
from gliomil.errors import OutputError
from gliomil.evaluation.plots import plot_attention, plot_confusion, plot_learning_curves, plot_roc
from gliomil.runtime.files import write_text
from gliomil.vocabulary import grade_of


def open_live(log_dir: Path, epochs_done: int = 0):
    """DVCLive logging into ``log_dir``, fresh, or continuing a resumed fold after ``epochs_done`` epochs.

    One DVCLive step per epoch. Rows a stopped run logged after its last saved epoch are dropped first, so the
    TSVs end exactly as an uninterrupted run's; the step is set here, not read back by DVCLive (which resumes a
    run of one finished step at step 0 again).
    """
    if epochs_done:
        for table in Path(log_dir, "plots", "metrics").rglob("*.tsv"):
            with table.open(newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f, delimiter="\t"))
            kept = [rows[0]] + [row for row in rows[1:] if int(row[rows[0].index("step")]) < epochs_done]
            text = io.StringIO(newline="")
            csv.writer(text, delimiter="\t", lineterminator="\n").writerows(kept)
            write_text(table, text.getvalue())
    with live_writes(log_dir):
        live = Live(dir=str(log_dir), dvcyaml=False, save_dvc_exp=False, resume=bool(epochs_done))
    if epochs_done:
        live.step = epochs_done
    return live


@contextmanager
def live_writes(log_dir: Path) -> Iterator[None]:
    """Around DVCLive's calls that write (``Live(...)``, ``log_metric``, ``next_step``, ``end``): DVCLive writes its
    files itself, not through :mod:`gliomil.runtime.files`, so a full disk there raises OSError; it becomes an
    :class:`OutputError` naming the file when the error does, else ``log_dir``. (Its files may be torn then: the
    train stage builds them in the fold's resume folder and moves only a finished fold into its outputs.)"""
    try:
        yield
    except OSError as exc:
        raise OutputError(exc.filename or log_dir, exc) from None


def attention_examples(val_set: BagSet, n_hgg: int = 2, n_lgg: int = 1) -> list[int]:
    """Indices of a few fixed validation patients (the first HGG and LGG ids in sorted order)."""
    order = sorted(range(len(val_set)), key=lambda i: val_set.subject_ids[i])
    hgg = [i for i in order if val_set.labels[i] == 1][:n_hgg]
    lgg = [i for i in order if val_set.labels[i] == 0][:n_lgg]
    return hgg + lgg


class EpochReporter:
    """Called after each epoch: logs every value to ``live`` and, every ``plot_every`` epochs, draws figures.

    Figure names are deterministic: ``<plot_dir>/epoch_<NNN>_{curves,roc,confusion,attention}.png`` (no attention
    figure for an aggregator without attention: :func:`gliomil.evaluation.plots.figures_per_epoch`).
    A failing figure is reported through ``log`` and never stops training.
    """

    def __init__(
        self,
        live,
        plot_dir: Path,
        plot_every: int,
        fold: int,
        val_set: BagSet,
        log: Callable[[str], None] = print,
        history: list[dict] | None = None,
    ):
        self.live = live
        self.plot_dir = Path(plot_dir)
        self.plot_every = plot_every
        self.fold = fold
        self.val_set = val_set
        self.examples = attention_examples(val_set)
        self.log = log
        self.history: list[dict] = list(history or [])  # a resumed fold's epochs so far (its learning curves)

    def __call__(self, epoch: int, logged: dict, val_scores) -> None:
        self.history.append(logged)
        with live_writes(self.live.dir):
            for name, value in logged.items():
                # DVC reads metrics as JSON, which has no NaN (e.g. AUC of a one-class batch).
                if name != "epoch" and value is not None and math.isfinite(value):
                    self.live.log_metric(name, value)
            self.live.next_step()
        if self.plot_every and epoch % self.plot_every == 0:
            try:
                self.plot(epoch, val_scores)
            except OutputError:  # a full disk or an unwritable folder ends the stage, as for any output
                raise
            except Exception as exc:  # a figure that fails to draw is never worth a lost training run
                self.log(f"WARNING: fold {self.fold} epoch {epoch}: plotting failed: {type(exc).__name__}: {exc}")

    def plot(self, epoch: int, val_scores) -> None:
        stem = self.plot_dir / f"epoch_{epoch:03d}"
        title = f"fold {self.fold}, epoch {epoch}, inner validation"
        labels, probabilities = self.val_set.labels, val_scores.probabilities
        plot_learning_curves(self.history, Path(f"{stem}_curves.png"))
        plot_roc(labels, probabilities, Path(f"{stem}_roc.png"), title)
        plot_confusion(labels, (probabilities >= 0.5).astype(int), Path(f"{stem}_confusion.png"), title)
        attention = val_scores.attention_per_bag()
        if attention is None:  # an aggregator without attention (mean, max pooling) has no attention figure
            return
        examples = [
            {
                "subject_id": self.val_set.subject_ids[i],
                "grade": grade_of(self.val_set.labels[i]),
                "probability": float(probabilities[i]),
                "attention": attention[i],
                "tumour_fraction": self.val_set.tumour_fraction[i],
                "critical": None if val_scores.critical is None else int(val_scores.critical[i]),
            }
            for i in self.examples
        ]
        if examples:
            plot_attention(examples, Path(f"{stem}_attention.png"), title)
