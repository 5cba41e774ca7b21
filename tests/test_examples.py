"""The scripts in examples/ run, in their ``--fast`` mode, as a user runs them: a subprocess of
this Python, from a scratch directory, checked by exit code and a key line of output."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sparqforge.sw import bundle

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script, *args, cwd):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--fast", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{script} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("options", [("--model", "mlp", "--quant", "power"),
                                     ("--model", "cnn", "--quant", "uniform")])
def test_export_digits(options, tmp_path):
    out = run("export_digits.py", *options, "-o", "digits.npz", cwd=tmp_path)
    assert "wrote digits.npz" in out
    accuracy = re.search(r"^integer accuracy (\d\.\d{4})$", out, re.MULTILINE)
    assert accuracy and float(accuracy.group(1)) > 0.5, out
    loaded = bundle.load(tmp_path / "digits.npz")
    assert loaded.name == f"{options[1]}-{options[3]}"


def test_prune_digits_table(tmp_path):
    out = run("prune_digits.py", cwd=tmp_path)
    assert re.search(r"^\s*model\s+pattern\s+dense\s+.*exact N:M$", out, re.MULTILINE), out
    assert re.search(r"^\s*mlp\s+2:4\s+.*\s+yes$", out, re.MULTILINE), out


def test_prune_digits_json(tmp_path):
    report = json.loads(run("prune_digits.py", "--json", cwd=tmp_path))
    assert list(report["models"]) == ["mlp"]
    row = report["models"]["mlp"]["patterns"]["2:4"]
    assert row["exact_nm"] is True and set(row) == {"oneshot", "bdwp", "srste", "exact_nm"}


@pytest.mark.sim
def test_residual_digits_runs_on_the_rtl(tmp_path):
    out = run("residual_digits.py", cwd=tmp_path)
    assert re.search(r"RTL == golden: True$", out, re.MULTILINE), out
    assert re.search(r"^\s+block\.add\s+add\s+host\b", out, re.MULTILINE), out


def test_every_example_has_a_fast_mode_and_a_test():
    tested = {"export_digits.py", "prune_digits.py", "residual_digits.py"}
    scripts = {path.name for path in EXAMPLES.glob("*.py")}
    assert scripts == tested
    for name in scripts:
        text = (EXAMPLES / name).read_text()
        assert "--fast" in text.split('"""')[1], f"{name}'s docstring does not document --fast"
