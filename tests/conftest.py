"""Shared, cached digits bundles for the runtime and bundle tests; ``slow`` tests run only
when selected (``-m slow``) or with ``SLOW=1``."""

import os

import pytest
import torch

from sparqforge.sw import digits

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SLOW") == "1" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow (place and route, formal proofs, whole-model RTL "
                                   "runs): run with -m slow or SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def trained():
    """Briefly trained digits models (accuracy is not what these tests check)."""
    data = digits.load_digits()
    models = {kind: digits.train(digits.make_model(kind), data[0], data[1], epochs=8)
              for kind in ("mlp", "cnn")}
    return models, data


@pytest.fixture(scope="session")
def bundles(trained):
    """(kind, scheme) -> bundle, exported once per session."""
    from sparqforge.sw.digits import quantize_and_export

    models, data = trained
    cache = {}

    def get(kind, scheme):
        if (kind, scheme) not in cache:
            cache[kind, scheme] = quantize_and_export(kind, models[kind], data, scheme)[0]
        return cache[kind, scheme]
    return get
