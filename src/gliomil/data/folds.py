"""The fold files `split` writes and `train`, `evaluate` and `baselines` read (``data/splits/fold_<k>.json``).

Apart from :mod:`gliomil.data.split`, which decides the folds, so that a change to how folds are cut re-runs
`split` and, only when the folds themselves change, what reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FoldSplit:
    """Subject ids of one fold: ``train`` fits the model, ``inner_val`` selects it, ``test`` is held out."""

    fold: int
    train: list[str]
    inner_val: list[str]
    test: list[str]

    def to_json(self) -> str:
        return (
            json.dumps(
                {"fold": self.fold, "train": self.train, "inner_val": self.inner_val, "test": self.test}, indent=1
            )
            + "\n"
        )

    @classmethod
    def read(cls, path: str | Path) -> FoldSplit:
        data = json.loads(Path(path).read_text())
        return cls(int(data["fold"]), list(data["train"]), list(data["inner_val"]), list(data["test"]))
