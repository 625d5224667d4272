"""Training throughput: real training steps on preprocessed bags against pure compute on random tensors.

    python benchmarks/train_benchmark.py [--preprocessed data/preprocessed] [--steps 30] [--set KEY=VALUE ...]

Needs `dvc repro split` (or a full repro) first. ``--set`` overrides a param the way ``dvc exp run -S`` does
(``--set train.model.aggregator=abmil --set train.model.prediction=bag_stream``,
``--set train.instance_supervision=0.5``), so candidates are timed against the default in one shell run.
Reports, for the params in params.yaml:
- slices/s of full training steps (bag reading and augmentation + forward + loss + backward + optimiser step);
- slices/s of the same steps on random tensors already in memory (the encoder's pure compute);
- their ratio, and the share of a step spent reading bags (target: under 10%);
- the cost of one epoch's MIL diagnostics next to the epoch (the audit claimed under 1%).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch
import yaml

from gliomil import params as P
from gliomil.data.bags import BagSet
from gliomil.data.folds import FoldSplit
from gliomil.evaluation.diagnostics import available_summary
from gliomil.evaluation.scoring import BagScores
from gliomil.nested import assign
from gliomil.runtime.device import autocast_dtype
from gliomil.training.loop import TrainConfig, draw_batch, train_step
from gliomil.training.losses import class_weights_from_counts, mil_loss, tumour_targets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocessed", default="data/preprocessed")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    args = parser.parse_args()

    params = P.load_params()
    for item in args.set:
        key, _, text = item.partition("=")
        assign(params, key, yaml.safe_load(text))
    P.check_params(params)
    top = {key: P.value(params, key) for key in ("seed", "label_smoothing", "use_class_weights")}
    config = TrainConfig.from_settings(top, P.section(params, "train"))
    dtype = autocast_dtype(torch.device("cpu"), config.amp)
    fold_0 = FoldSplit.read("data/splits/fold_0.json").train
    train_set = BagSet.load(args.preprocessed, fold_0, tumour_maps=config.pixel_supervision > 0)
    # the loss exactly as train_fold builds it
    class_weights = class_weights_from_counts(*train_set.class_counts()) if config.use_class_weights else None
    loss_fn = partial(mil_loss, label_smoothing=config.label_smoothing, class_weights=class_weights)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = config.model.build().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def step(slices, sizes, labels, tumour=None, tumour_maps=None):
        """One training step exactly as train_fold takes it; returns the model's outputs."""
        if config.instance_supervision > 0 and tumour is None:  # random tensors: a tumour in every other slice
            tumour = torch.tensor([i % 2 for i in range(len(slices))], dtype=torch.float32)
        if config.pixel_supervision > 0 and tumour_maps is None:  # random tensors: a tumour in one corner
            tumour_maps = torch.zeros(slices.shape[0], config.model.tumour_head, *slices.shape[2:])
            tumour_maps[..., : slices.shape[2] // 4, : slices.shape[3] // 4] = 1.0
        return train_step(
            model,
            optimizer,
            scaler,
            loss_fn,
            slices,
            sizes,
            labels,
            dtype,
            config.instance_supervision,
            tumour,
            config.instance_target,
            config.pixel_supervision,
            tumour_maps,
        )[1]

    batch = config.batch_size
    channels, height, width = train_set.bags[0].shape[1:]
    shape = ((2 * config.model.context_slices + 1) * channels, height, width)

    def read_batch():
        chosen = rng.choice(len(train_set), size=batch, replace=False)
        slices, picks, maps = draw_batch(train_set, chosen, config, rng)
        tumour = np.concatenate([train_set.tumour_fraction[i][p] for i, p in zip(chosen, picks)])
        return (
            torch.from_numpy(slices),
            [len(p) for p in picks],
            torch.from_numpy(train_set.labels[chosen]),
            torch.from_numpy(tumour_targets(tumour)),
            None if maps is None else torch.from_numpy(maps),
        )

    for _ in range(3):  # warm-up: allocator, oneDNN kernels
        step(*read_batch())

    read_seconds, step_seconds, slices, outputs = 0.0, 0.0, 0, []
    for _ in range(args.steps):
        tick = time.perf_counter()
        x, sizes, y, tumour, maps = read_batch()
        tock = time.perf_counter()
        outputs.append(step(x, sizes, y, tumour, maps))
        read_seconds += tock - tick
        step_seconds += time.perf_counter() - tock
        slices += len(x)

    fixed = torch.randn(config.batch_size * config.bag_size, *shape)
    fixed_sizes = [config.bag_size] * config.batch_size
    fixed_y = torch.tensor([1, 0] * (config.batch_size // 2) + [1] * (config.batch_size % 2))
    tick = time.perf_counter()
    for _ in range(args.steps):
        step(fixed, fixed_sizes, fixed_y)
    pure_seconds = time.perf_counter() - tick

    scored = BagScores.concat([BagScores.from_output(o, config.model.prediction) for o in outputs])
    tick = time.perf_counter()
    available_summary(scored.attention, scored.instance_logits, scored.bag_sizes, None, None, config.top_k)
    diagnostics_seconds = time.perf_counter() - tick

    total = read_seconds + step_seconds
    pure_rate = config.batch_size * config.bag_size * args.steps / pure_seconds
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision "
        f"{'float32' if dtype is None else dtype}, slices {tuple(shape)}, "
        f"{config.batch_size} bags x {config.bag_size} slices, width {config.model.width}, "
        f"depth {config.model.depth}, aggregator {config.model.aggregator}, instance supervision "
        f"{config.instance_supervision}"
    )
    print("| measure | value |\n|---|---|")
    print(f"| training steps on real bags | {slices / total:.0f} slices/s |")
    print(f"| pure compute on random tensors | {pure_rate:.0f} slices/s |")
    print(f"| ratio real / pure | {slices / total / pure_rate:.2f} |")
    print(f"| reading bags, share of a step | {100 * read_seconds / total:.2f}% |")
    print(f"| MIL diagnostics of {args.steps} steps, share of those steps | {100 * diagnostics_seconds / total:.3f}% |")


if __name__ == "__main__":
    main()
