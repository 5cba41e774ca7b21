"""The N:M pruning study on the built-in digits models: dense training, one-shot pruning and
N:M fine-tuning (``examples/prune_digits.py``, ``docs/formats.md``).

An experiment, not library code: it uses :mod:`sparqforge.sw.prune` as a user would.
"""

__all__ = ["digits_pruning_report", "format_report"]

import copy
import time

import torch

from . import digits, nm_format
from .digits import FINETUNE_SCHEDULE
from .prune import METHODS, NMSparsifier, prune_model, weight_matrix


def _is_exact_nm(model, n, m):
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            matrix = weight_matrix(module.weight.detach()).cpu().numpy()
            if nm_format.find_violation(matrix, n, m) is not None:
                return False
    return True


def digits_pruning_report(*, models=("mlp", "cnn"), patterns=((2, 4), (2, 8)),
                          methods=METHODS, epochs=30, schedule=FINETUNE_SCHEDULE, seed=0,
                          threads=1):
    """Dense training, one-shot N:M pruning and N:M fine-tuning on the digits models.

    Every ``Linear`` and ``Conv2d`` is pruned. Fine-tuning starts from the dense trained
    model, attaches :class:`~sparqforge.sw.prune.NMSparsifier`, runs
    :func:`sparqforge.sw.digits.train` (Adam, seeded) once per stage of ``schedule`` (a
    step-down learning rate), then :meth:`~sparqforge.sw.prune.NMSparsifier.finalize`.

    Parameters
    ----------
    models : iterable of {"mlp", "cnn"}
    patterns : iterable of (n, m)
    methods : iterable of {"bdwp", "srste"}
    epochs : int
        Dense training epochs (at the default learning rate of ``digits.train``).
    schedule : iterable of (float, int)
        Fine-tuning stages, ``(learning rate, epochs)``; stage ``i`` uses seed ``seed + i``.
    seed : int
        Data split, initialisation and batch order.
    threads : int or None
        ``torch.set_num_threads`` for the run (restored afterwards). One thread is faster
        for these tiny models on a shared machine and fixes the summation order, so the
        figures repeat exactly; ``None`` leaves torch's setting alone.

    Returns
    -------
    dict
        ``{"models": {kind: {"dense": acc, "dense_finetuned": acc, "patterns": {"n:m":
        {"oneshot": acc, method: acc, ..., "exact_nm": bool}}}}, "settings": {...},
        "seconds": float}`` with test accuracies in ``[0, 1]``. ``dense_finetuned`` is the
        dense model after the same ``schedule`` without sparsity (the fair reference for the
        fine-tuned columns); ``exact_nm`` is whether every pruned and fine-tuned weight
        passed :func:`~sparqforge.sw.nm_format.find_violation`.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _digits_pruning_report(models, patterns, methods, epochs, schedule, seed)
    finally:
        torch.set_num_threads(previous)


def _digits_pruning_report(models, patterns, methods, epochs, schedule, seed):
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = digits.load_digits(seed=seed)
    result = {}
    for kind in models:
        dense = digits.train(digits.make_model(kind, seed=seed), x_train, y_train,
                             epochs=epochs, seed=seed)
        # The same fine-tuning schedule without sparsity: how much the extra epochs alone give.
        reference = copy.deepcopy(dense)
        digits.finetune(reference, x_train, y_train, schedule=schedule, seed=seed)
        entry = {"dense": digits.evaluate(dense, x_test, y_test),
                 "dense_finetuned": digits.evaluate(reference, x_test, y_test), "patterns": {}}
        for n, m in patterns:
            oneshot = copy.deepcopy(dense)
            prune_model(oneshot, n, m)
            row = {"oneshot": digits.evaluate(oneshot, x_test, y_test)}
            exact = _is_exact_nm(oneshot, n, m)
            for method in methods:
                tuned = copy.deepcopy(dense)
                sparsifier = NMSparsifier(tuned, n, m, method=method).attach()
                digits.finetune(tuned, x_train, y_train, schedule=schedule, seed=seed)
                sparsifier.finalize()
                row[method] = digits.evaluate(tuned, x_test, y_test)
                exact = exact and _is_exact_nm(tuned, n, m)
            row["exact_nm"] = exact
            entry["patterns"][f"{n}:{m}"] = row
        result[kind] = entry
    settings = dict(epochs=epochs, schedule=[list(stage) for stage in schedule], seed=seed,
                    methods=list(methods), test_images=len(y_test))
    return {"models": result, "settings": settings,
            "seconds": round(time.perf_counter() - start, 1)}


def format_report(report):
    """The report of :func:`digits_pruning_report` as a text table (accuracy in %)."""
    methods = report["settings"]["methods"]
    header = ["model", "pattern", "dense", "dense+ft", "one-shot"] + methods + ["exact N:M"]
    rows = []
    for kind, entry in report["models"].items():
        for pattern, row in entry["patterns"].items():
            rows.append([kind, pattern, f"{100 * entry['dense']:.2f}",
                         f"{100 * entry['dense_finetuned']:.2f}", f"{100 * row['oneshot']:.2f}"]
                        + [f"{100 * row[method]:.2f}" for method in methods]
                        + ["yes" if row["exact_nm"] else "NO"])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
