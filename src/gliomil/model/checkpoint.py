"""A trained model on disk: weights, the config that rebuilds them, and a record of plain values."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from gliomil.model.mil import MILModel, ModelConfig
from gliomil.runtime.files import write_with


def save_checkpoint(model: MILModel, config: ModelConfig, path: Path, **record) -> None:
    """Weights, the :class:`ModelConfig` that rebuilds them and ``record`` (plain values: fold, epoch, ...).

    Serialised in memory, then written atomically: a full disk leaves the previous checkpoint whole and raises
    :class:`~gliomil.errors.OutputError` (torch.save straight to the file left a torn one and a raw error).
    """
    write_with(path, lambda f: torch.save({"model": model.state_dict(), "model_config": asdict(config), **record}, f))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[MILModel, dict]:
    """Rebuild the model saved by :func:`save_checkpoint` in eval mode (``weights_only=True``: no code is unpickled)."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    model = ModelConfig(**checkpoint["model_config"]).build()
    model.load_state_dict(checkpoint["model"], strict=True)
    return model.to(device).eval(), checkpoint
