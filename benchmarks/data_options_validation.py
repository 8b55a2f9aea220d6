"""Which training-data options should be LAA-Net's default? Judged on validation only.

Trains LAA-Net at the book's scale on its data (``config.book_data``: UTKFace where
``../shared/data`` has it) with each option of issue 18's fidelity fixes 1 and 2, and prints the
selected epoch's validation AUC (held-out SBI) and held-out-family AUC, the numbers model
selection sees. No test set is scored. The default row is chapter 3's own run (train-or-load:
``runs/<profile>/<data>/laanet``), so a finished ``make book`` makes it free.

    python benchmarks/data_options_validation.py [--profile cpu] [--options official geometric]
        [--eval-amp off] [--skip-default]

``--eval-amp off`` scores validation in float32 whatever the profile says (the option rows then
train into their own folders); ``--skip-default`` trains only the option rows (the default row is then read from
an earlier run's results).

One seed per row: read differences against the seed spread of chapter 5's reference rows.
"""

from __future__ import annotations

import argparse
import logging

import pandas as pd

from dfattn.config import book_data, get_profile, runs_dir
from dfattn.train import TrainConfig, train

OPTIONS = {
    "default (paper targets, no geometric augmentation)": {},
    "official": {"targets": "official"},
    "geometric": {"geometric_aug": True},
    "official+geometric": {"targets": "official", "geometric_aug": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--options", nargs="*", default=["official", "geometric"],
                        help=f"rows besides the default: {[k for k in OPTIONS if OPTIONS[k]]}")
    parser.add_argument("--eval-amp", choices=("auto", "bf16", "off"), default=None,
                        help="autocast of validation (default: the profile's)")
    parser.add_argument("--skip-default", action="store_true", help="train the option rows only")
    args = parser.parse_args()
    logging.getLogger("dfattn.data").setLevel(logging.ERROR)
    book = book_data(get_profile(args.profile))
    runs = runs_dir(book.profile) / book.key
    rows = {}
    default = [] if args.skip_default else ["default (paper targets, no geometric augmentation)"]
    for name in [*default, *args.options]:
        folder = runs / "laanet" if not OPTIONS[name] else runs / "options" / f"laanet_{name}"
        if args.eval_amp is not None:  # not chapter 3's run, nor an option run scored otherwise
            folder = runs / "options" / f"{folder.name}_eval_{args.eval_amp}"
        config = TrainConfig(model="laanet", profile=book.profile, data=book.spec, progress=False,
                             eval_amp=args.eval_amp, **OPTIONS[name])
        _, history = train(config.resolved(), folder)
        best = history.loc[history["val_auc"].idxmax()]
        rows[name] = {"selected epoch": int(best["epoch"]), "val AUC (SBI)": best["val_auc"],
                      "held-out families AUC": best["family_auc"],
                      "minutes": history["train_seconds"].sum() / 60}
        print(name, rows[name], flush=True)
    print(f"\nLAA-Net on {book.label}, profile {book.profile.name} ({book.profile.train.n_train} faces, "
          f"{book.profile.train.image_size} px), validation only:")
    print(pd.DataFrame(rows).T.to_markdown(floatfmt=".3f"))


if __name__ == "__main__":
    main()
