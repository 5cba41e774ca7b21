"""N:M pruning of the digits MLP and CNN: one-shot magnitude pruning, then BDWP and SR-STE
fine-tuning, for 2:4 and 2:8.

Run from the repository root::

    .venv/bin/python examples/prune_digits.py          # table
    .venv/bin/python examples/prune_digits.py --json   # the same figures as JSON
    .venv/bin/python examples/prune_digits.py --fast   # seconds: a quick smoke run

``--fast`` runs only the MLP and only 2:4, trains the dense model for 5 epochs instead of 30
and fine-tunes in one stage of 2 epochs instead of the full schedule; both methods still run
and the N:M check is the same, only the accuracies mean less.

Every Linear and Conv2d layer is pruned; the final weights are checked to be exactly N:M
(``nm_format.find_violation`` on the conv-permuted matrices) and the script exits with
code 1 if one is not. Training is seeded, so a run repeats its figures.
"""

__all__ = ["main"]

import argparse
import json
import sys

from sparqforge.sw.digits_pruning import digits_pruning_report, format_report

#: ``digits_pruning_report`` arguments of ``--fast``.
FAST = dict(models=("mlp",), patterns=((2, 4),), epochs=5, schedule=((3e-3, 2),))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--seed", type=int, default=0, help="data split / training seed")
    parser.add_argument("--fast", action="store_true",
                        help="MLP and 2:4 only, 5 + 2 epochs (a smoke run)")
    args = parser.parse_args(argv)
    report = digits_pruning_report(seed=args.seed, **(FAST if args.fast else {}))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        settings = report["settings"]
        print(f"digits test accuracy (%), {settings['test_images']} test images, "
              f"seed {settings['seed']}; fine-tuning stages (lr, epochs): "
              f"{[tuple(stage) for stage in settings['schedule']]}")
        print(format_report(report))
        print(f"{report['seconds']} s")
    exact = all(row["exact_nm"] for entry in report["models"].values()
                for row in entry["patterns"].values())
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
