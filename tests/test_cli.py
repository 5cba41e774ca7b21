"""The sparqforge command line: outputs, one-line errors with exit code 2, nothing written on
bad input, exit code 1 on a mismatch."""

import json
import subprocess
import sys

import pytest

from sparqforge import cli


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sparqforge", *args], capture_output=True,
                          text=True)


@pytest.mark.parametrize("command", ["generate", "check", "bench", "demo", "export", "infer",
                                     "build", "synth"])
def test_help_on_every_command(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "usage: sparqforge" in proc.stdout


def test_generate_writes_verilog_rtlil_and_description(tmp_path):
    assert cli.main(["generate", "--rows", "3", "--cols", "5", "--a-bits", "4", "--w-bits", "3",
                     "--w-unsigned", "--max-depth", "100", "-o", str(tmp_path / "out")]) == 0
    desc = json.loads((tmp_path / "out" / "mac_array.json").read_text())
    assert desc["params"]["rows"] == 3 and desc["params"]["w_signed"] is False
    # products in [-8 * 7, 7 * 7]; 100 of them span [-5600, 4900]: 14 bits
    from sparqforge.hw.mac_array import MacArray
    from sparqforge.hw.requantizer import Requantizer
    assert desc["acc_bits"] == 14
    # 4 cycles to the accumulators (beat, operand copies, product, accumulate), then the
    # requantizer's stages and its output queue.
    assert desc["latency"] == MacArray(rows=3, cols=5).core_latency + Requantizer.latency == 24
    assert set(desc["ports"]) == {"a", "w", "o", "cfg"}
    assert "module mac_array" in (tmp_path / "out" / "mac_array.v").read_text()
    assert "module \\mac_array" in (tmp_path / "out" / "mac_array.il").read_text()
    # Written under temporary names and renamed: nothing else is left.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "mac_array.il", "mac_array.json", "mac_array.v"]


@pytest.mark.parametrize("args,message", [
    (["generate", "--rows", "0"], "Row count must be an integer in 1..64, not 0"),
    (["generate", "--a-bits", "9"], "Activation width must be an integer in 2..8, not 9"),
    (["generate", "--sparsity", "3:2"], "N:M sparsity requires 0 < N <= M, not 3:2"),
    (["generate", "--sparsity", "two"], "Sparsity must look like N:M"),
    (["generate", "--max-depth", "1000000"], "needs a 35-bit accumulator"),
    (["generate", "--w-bits", "abc"], "invalid int value: 'abc'"),
    (["check", "--shape", "4x4"], "Shape must be MxKxN"),
    (["check", "--shape", "4x300x4", "--max-depth", "256"], "K=300 exceeds --max-depth 256"),
    (["bench", "nothing"], "invalid choice: 'nothing'"),
])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, args, message):
    out = tmp_path / "never"
    proc = run_cli(*args, *(["-o", str(out)] if args[0] == "generate" else []))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("sparqforge: error:")
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("config,message", [
    (None, "Unknown board 'arty'; choose one of arty-a7-35"),
    ({"rows": 0}, "c.json: rows (array rows) must be an integer in 1..64, not 0"),
    ({"rows": 4, "colums": 4}, "has unknown keys ['colums']"),
    ({"clk_freq": 24e6}, "set clk_freq to 1.2e+07, not 2.4e+07"),
])
def test_board_commands_reject_bad_input_before_writing(tmp_path, config, message):
    out = tmp_path / "never"
    args = ["synth", "--board", "arty" if config is None else "icebreaker", "--out", str(out)]
    if config is not None:
        (tmp_path / "c.json").write_text(json.dumps(config))
        args += ["--config", str(tmp_path / "c.json")]
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists()


@pytest.mark.sim
def test_check_odd_configuration_is_bit_exact(capsys):
    code = cli.main(["check", "--rows", "3", "--cols", "5", "--a-bits", "3", "--w-bits", "8",
                     "--max-depth", "13", "--shape", "7x13x11", "--seed", "4", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["bit_exact"] and report["mismatches"] == 0
    assert report["cycles"] > 0 and 0 < report["macs_per_cycle"] <= 15


@pytest.mark.sim
def test_check_exits_1_on_a_mismatch(monkeypatch, capsys):
    from sparqforge.sw import golden
    real = golden.mac_array
    monkeypatch.setattr(golden, "mac_array", lambda *a, **k: real(*a, **k) + 1)
    code = cli.main(["check", "--rows", "2", "--cols", "2", "--max-depth", "8",
                     "--shape", "3x8x3", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and not report["bit_exact"] and report["mismatches"] == 2 * 9
