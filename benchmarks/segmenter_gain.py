"""How fast the tumour-moments stream's segmenter learns the tumour, for several gains (gliomil.model.moments).

    python benchmarks/segmenter_gain.py [--gains 1 10 100] [--steps 600] [--patients 40 20]

Needs `dvc repro split` (or a full repro) first. Trains the segmenter alone (``TumourMoments.segment``, the pixel
loss of ``train.pixel_supervision`` on the whole tumour's map) as training does: Adam at the default learning rate,
betas and weight decay, 4 bags of 32 random slices a step, drawn from the first ``--patients`` training patients of
fold 0; prints the loss and the Dice of the mask it predicts (probability >= 0.5, the mask the stream measures)
against the tumour's interior it is taught (``moments.INTERIOR``) on every slice of that many of fold 0's held-out
patients, after 50, 100, 230 (5 epochs of a fold) and ``--steps`` steps. Same seeds for every gain.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from gliomil import params as P
from gliomil.data.bags import BagSet
from gliomil.data.folds import FoldSplit
from gliomil.model import moments
from gliomil.training.losses import pixel_supervision_loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocessed", default="data/preprocessed")
    parser.add_argument("--gains", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--patients", type=int, nargs=2, default=[40, 20], metavar=("TRAIN", "HELD_OUT"))
    args = parser.parse_args()
    train = P.section(P.load_params(), "train")
    split = FoldSplit.read("data/splits/fold_0.json")
    train_ids, test_ids = split.train[: args.patients[0]], split.test[: args.patients[1]]
    bags = BagSet.load(args.preprocessed, train_ids + test_ids, tumour_maps=True)
    held_out = range(len(train_ids), len(train_ids) + len(test_ids))
    test_slices = torch.from_numpy(np.concatenate([bags.bags[i] for i in held_out]).astype(np.float32))
    truth = np.concatenate([bags.tumour_maps[i][:, 0] for i in held_out]) / 255 >= moments.INTERIOR
    checkpoints = sorted({step for step in (50, 100, 230) if step < args.steps} | {args.steps})
    print(f"{len(train_ids)} training and {len(test_ids)} held-out patients of fold 0 ({truth.mean():.2%} tumour)")
    print("gain | step | pixel loss (last batch) | held-out Dice | segmenter bias (logit)")
    for gain in args.gains:
        moments.SEGMENTER_GAIN = gain
        rng = np.random.default_rng(0)
        torch.manual_seed(0)
        head = moments.TumourMoments()
        optimizer = torch.optim.Adam(
            head.parameters(), lr=train["lr"], betas=tuple(train["betas"]), weight_decay=train["weight_decay"]
        )
        for step in range(1, args.steps + 1):
            chosen = rng.choice(len(train_ids), 4)
            picks = [rng.choice(len(bags.bags[i]), 32) for i in chosen]
            slices = np.concatenate([bags.bags[i][p] for i, p in zip(chosen, picks)]).astype(np.float32)
            maps = np.concatenate([bags.tumour_maps[i][p, :1] for i, p in zip(chosen, picks)]) / np.float32(255)
            targets = head.pixel_targets(torch.from_numpy(maps))
            loss = pixel_supervision_loss(head.segment(torch.from_numpy(slices)), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step in checkpoints:
                with torch.no_grad():
                    mask = (head.segment(test_slices)[:, 0] >= 0).numpy()
                dice = 2 * (mask & truth).sum() / max(mask.sum() + truth.sum(), 1)
                bias = head.segmenter.bias.item() * gain
                print(f"{gain:g} | {step} | {loss.item():.4f} | {dice:.3f} | {bias:.2f}", flush=True)


if __name__ == "__main__":
    main()
