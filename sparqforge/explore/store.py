"""The results store of a sweep: one SQLite file (``results.sqlite`` in the sweep's folder),
one row per finished or failed build point and per latency point, keyed by the point's hash
(configuration, seed, tool versions). Only the client writes it, once per finished point, so
an interrupted sweep keeps everything that finished before the interruption.
"""

__all__ = ["Store", "STORE_NAME"]

import json
import sqlite3
import time
from pathlib import Path

from ..errors import ConfigError

STORE_NAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
    key TEXT PRIMARY KEY, board TEXT, mode TEXT, config TEXT, seed INTEGER,
    status TEXT, error TEXT, fmax_mhz REAL, timing_met INTEGER,
    lut INTEGER, ff INTEGER, dsp INTEGER, bram INTEGER, seconds REAL, report TEXT,
    tools TEXT, attempts INTEGER, worker TEXT, bitstream TEXT, build_dir TEXT,
    finished_at REAL);
CREATE TABLE IF NOT EXISTS latencies (
    key TEXT PRIMARY KEY, config_key TEXT, config TEXT, model TEXT, status TEXT, error TEXT,
    cycles REAL, macs INTEGER, rtl_equals_golden INTEGER, seconds REAL, attempts INTEGER,
    finished_at REAL);
"""

_BUILD_COLUMNS = ("key", "board", "mode", "config", "seed", "status", "error", "fmax_mhz",
                  "timing_met", "lut", "ff", "dsp", "bram", "seconds", "report", "tools",
                  "attempts", "worker", "bitstream", "build_dir", "finished_at")
_LATENCY_COLUMNS = ("key", "config_key", "config", "model", "status", "error", "cycles",
                    "macs", "rtl_equals_golden", "seconds", "attempts", "finished_at")
_JSON = ("config", "report", "tools")


class Store:
    """The results of one sweep folder.

    Raises
    ------
    ConfigError
        When the file exists and is not a sparqforge results store.
    """

    def __init__(self, folder):
        self._path = Path(folder) / STORE_NAME
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self._path)
            self._db.executescript(_SCHEMA)
            # A store from an earlier sparqforge lacks the newer columns.
            for table, columns in (("builds", _BUILD_COLUMNS), ("latencies", _LATENCY_COLUMNS)):
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self._path} is not a sparqforge results store ({exc}); "
                              f"choose another folder") from None

    @property
    def path(self):
        return self._path

    def close(self):
        self._db.close()

    def done(self, table, *, retry_failed=False):
        """The keys of ``table`` (``builds`` or ``latencies``) that a sweep need not redo."""
        status = ("ok",) if retry_failed else ("ok", "failed")
        rows = self._db.execute(f"SELECT key FROM {table} WHERE status IN "
                                f"({','.join('?' * len(status))})", status)
        return {row[0] for row in rows}

    def put_build(self, point, result):
        """Record build ``point`` (a :class:`~.spec.BuildPoint`) with its ``result`` (what
        :func:`~.tasks.run_build` returned)."""
        util = result.get("utilization") or {}
        row = {"key": point.key, "board": point.board, "mode": point.mode,
               "config": point.config, "seed": point.seed, "status": result["status"],
               "error": result.get("error"), "fmax_mhz": result.get("fmax_mhz"),
               "timing_met": result.get("timing_met"), "lut": util.get("lut"),
               "ff": util.get("ff"), "dsp": util.get("dsp"), "bram": util.get("bram"),
               "seconds": result.get("seconds"), "report": result.get("report"),
               "tools": result.get("tools") or point.tools,
               "attempts": result.get("attempts"), "worker": result.get("worker"),
               "bitstream": result.get("bitstream"), "build_dir": result.get("build_dir"),
               "finished_at": time.time()}
        self._put("builds", _BUILD_COLUMNS, row)

    def put_latency(self, point, result):
        row = {"key": point.key, "config_key": point.config_key, "config": point.config,
               "model": point.model, "status": result["status"], "error": result.get("error"),
               "cycles": result.get("cycles"), "macs": result.get("macs"),
               "rtl_equals_golden": result.get("rtl_equals_golden"),
               "seconds": result.get("seconds"), "attempts": result.get("attempts"),
               "finished_at": time.time()}
        self._put("latencies", _LATENCY_COLUMNS, row)

    def _put(self, table, columns, row):
        values = [json.dumps(row[c]) if c in _JSON and row[c] is not None else row[c]
                  for c in columns]
        with self._db:
            self._db.execute(f"INSERT OR REPLACE INTO {table} ({','.join(columns)}) VALUES "
                             f"({','.join('?' * len(columns))})", values)

    def rows(self, table, keys=None):
        """Every row of ``table`` as a dict (JSON columns decoded); only ``keys`` if given,
        in the order finished."""
        columns = _BUILD_COLUMNS if table == "builds" else _LATENCY_COLUMNS
        cursor = self._db.execute(f"SELECT {','.join(columns)} FROM {table} "
                                  f"ORDER BY finished_at")
        out = []
        for values in cursor:
            row = dict(zip(columns, values))
            for c in _JSON:
                if c in row and row[c] is not None:
                    row[c] = json.loads(row[c])
            if keys is None or row["key"] in keys:
                out.append(row)
        return out
