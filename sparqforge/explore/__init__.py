"""Design-space exploration on Dask ``distributed`` (``sparqforge explore``,
``sparqforge build --seeds``; ``docs/explore.md``): a spec of board configurations, clocks and
placement seeds (:mod:`.spec`), one task per point (:mod:`.tasks`) run by the engine
(:mod:`.engine`) into a SQLite results store (:mod:`.store`) that a sweep resumes from, and
the Pareto report (:mod:`.report`).
"""

__all__ = ["load_spec", "make_spec", "run_sweep", "Store"]

from .engine import run_sweep
from .spec import load_spec, make_spec
from .store import Store
