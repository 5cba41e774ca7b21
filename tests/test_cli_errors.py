"""Every bad command line is one line on stderr starting with ``sparqforge: error:``, exit
code 2, no traceback, and nothing left behind in the working directory (no partial output,
no temporary file): bad output paths, bad inputs and labels, bad accelerator files, unknown
options, for every command. Each case fails before any heavy work (training, Verilator,
yosys). Also: ``--json`` piped into ``head`` ends without a traceback."""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

#: A directory nobody can create files in, root included.
UNWRITABLE = "/proc/x"
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(),
                                reason="needs /proc (Linux) for an unwritable directory")


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory):
    """A small valid MLP bundle, quantized from an untrained model (no training)."""
    from sparqforge.sw import bundle as bundle_io
    from sparqforge.sw import digits
    from sparqforge.sw.export import export_model
    from sparqforge.sw.quantize import quantize_model

    data = digits.load_digits()
    calib = data[0][:64]
    qmodel = quantize_model(digits.make_model("mlp"), bits=8, method="uniform", act_bits=8,
                            calib=calib)
    bundle = export_model(qmodel, calib, name="mlp-untrained")
    return bundle_io.save(bundle, tmp_path_factory.mktemp("bundle") / "mlp.npz")


def _inputs(workdir):
    """The input, label and configuration files the infer cases name."""
    rng = np.random.default_rng(0)
    x = rng.random((5, 1, 8, 8)).astype(np.float32)
    arrays = {
        "x.npy": x,
        "y.npy": np.arange(5),
        "empty.npy": np.zeros((0, 64)),
        "complex.npy": x.reshape(5, 64) + 1j,
        "bool.npy": x.reshape(5, 64) > 0.5,
        "str.npy": np.array(["a", "b", "c", "d", "e"]),
        "nan.npy": np.where(x > 0.9, np.nan, x),
        "transposed.npy": x.reshape(5, 64).T,
        "flat.npy": x.reshape(-1),
        "layout.npy": x.reshape(5, 4, 16),
        "labels_short.npy": np.arange(3),
        "labels_2d.npy": np.arange(5).reshape(5, 1),
        "labels_str.npy": np.array(["0", "1", "2", "3", "4"]),
        "labels_float.npy": np.arange(5, dtype=np.float64),
        "labels_range.npy": np.array([0, 1, 2, 3, 10]),
    }
    for name, value in arrays.items():
        np.save(workdir / name, value)
    np.save(workdir / "object.npy", np.array([{"a": 1}, None], dtype=object))
    np.savez(workdir / "archive.npz", x=x)
    (workdir / "garbage.npy").write_bytes(b"this is not a NumPy file\n")
    (workdir / "tables.json").write_text(json.dumps({"tables": "yes"}))
    (workdir / "broken.json").write_text("{")
    (workdir / "board.json").write_text(json.dumps({"rows": 0}))


def _populate(folder):
    (folder / "afile").write_text("keep me\n")
    (folder / "adir").mkdir()
    (folder / "adir" / "inside").write_text("keep me too\n")
    _inputs(folder)
    return folder


@pytest.fixture
def workdir(tmp_path):
    return _populate(tmp_path)


def snapshot(folder):
    """Every path under ``folder``, with size and modification time for files (a directory
    in which a file was created and removed again has a new time, and nothing new)."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else (p.stat().st_size,
                                                                   p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def run_in(workdir, args, **kw):
    # Warnings shown, so that a warning in place of an error (a complex input cast to real)
    # is a second stderr line.
    env = dict(os.environ, PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, "-m", "sparqforge", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=120, **kw)


B = "{bundle}"       # replaced by the session's bundle (outside the working directory)
X = ["--inputs", "x.npy"]
LONG = "n" * 300     # a file name longer than any file system takes
# (tests/test_cli.py has the array parameter errors of generate and check.)

def case(name, args, message, *marks):
    """A bad command line, named; ``message``: a part of the one error line."""
    return pytest.param(args, message, id=name, marks=marks)


CASES = [
    # top level
    case("top-unknown-option", ["--bogus"], "unrecognized arguments: --bogus"),
    case("top-unknown-option-value", ["--bogus=1"], "unrecognized arguments: --bogus=1"),
    case("top-no-command", [], "the following arguments are required: COMMAND"),
    case("top-unknown-command", ["bogus"], "invalid choice: 'bogus'"),
    case("top-option-before-command", ["--json", "infer"], "unrecognized arguments: --json"),
    # generate
    case("generate-unknown-option", ["generate", "--bogus"], "unrecognized arguments: --bogus"),
    case("generate-unknown-option-with-o", ["generate", "-o", "out", "--bogus"],
         "unrecognized arguments: --bogus"),
    case("generate-empty-output", ["generate", "-o", ""], "-o is empty"),
    case("generate-output-is-file", ["generate", "-o", "afile"],
         "afile exists and is not a directory"),
    case("generate-output-under-file", ["generate", "-o", "afile/sub"],
         "afile is not a directory"),
    case("generate-output-unwritable", ["generate", "-o", UNWRITABLE],
         "cannot create files in /proc", needs_proc),
    case("generate-output-name-too-long", ["generate", "-o", LONG], "name too long"),
    case("generate-bad-sparsity", ["generate", "--sparsity", "5:4", "-o", "out/deeper"],
         "N:M sparsity requires 0 < N <= M, not 5:4"),
    # check
    case("check-bad-stall", ["check", "--stall", "1.5"], "--stall must be a probability"),
    case("check-negative-seed", ["check", "--seed", "-1"], "--seed must be a non-negative"),
    case("check-unknown-option", ["check", "--bogus"], "unrecognized arguments: --bogus"),
    # bench
    case("bench-no-group", ["bench"], "the following arguments are required: group"),
    case("bench-unknown-option", ["bench", "dense", "--bogus"],
         "unrecognized arguments: --bogus"),
    # demo: arguments and the output directory checked before the accelerator is written
    case("demo-bad-backend", ["demo", "--backend", "bogus"], "Backend must be golden"),
    case("demo-negative-clock", ["demo", "--clock-mhz", "-1"],
         "--clock-mhz must be a positive finite number, not -1"),
    case("demo-nan-clock", ["demo", "--clock-mhz", "nan"], "--clock-mhz must be a positive"),
    case("demo-output-is-file", ["demo", "--out", "afile"],
         "afile exists and is not a directory"),
    case("demo-empty-output", ["demo", "--out", ""], "--out is empty"),
    case("demo-output-under-file", ["demo", "--out", "afile/sub"], "afile is not a directory"),
    case("demo-output-unwritable", ["demo", "--out", UNWRITABLE],
         "cannot create files in /proc", needs_proc),
    case("demo-unknown-option", ["demo", "--bogus"], "unrecognized arguments: --bogus"),
    # export: the output file checked before training
    case("export-output-is-dir", ["export", "-o", "adir"], "adir is a directory; give a file"),
    case("export-output-trailing-slash", ["export", "-o", "new/"],
         "is a directory; give a file"),
    case("export-empty-output", ["export", "-o", ""], "-o is empty"),
    case("export-output-under-file", ["export", "-o", "afile/sub.npz"],
         "afile is not a directory"),
    case("export-output-dir-missing", ["export", "-o", "missing/b.npz"],
         "directory missing does not exist"),
    case("export-output-unwritable", ["export", "-o", UNWRITABLE + ".npz"],
         "cannot create files in /proc", needs_proc),
    case("export-output-special-file", ["export", "-o", "/dev/null"],
         "exists and is not a regular file",
         pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")),
    case("export-output-name-too-long", ["export", "-o", LONG + ".npz"], "name too long"),
    case("export-no-room-for-temporary-name", ["export", "-o", "n" * 253], "name too long"),
    case("export-no-output", ["export"], "the following arguments are required: -o/--output"),
    case("export-bad-model", ["export", "--model", "rnn", "-o", "b.npz"],
         "invalid choice: 'rnn'"),
    case("export-unknown-option", ["export", "-o", "b.npz", "--bogus"],
         "unrecognized arguments: --bogus"),
    # infer: options, bundle, accelerator
    case("infer-unknown-option", ["infer", B, "--bogus"], "unrecognized arguments: --bogus"),
    case("infer-unknown-option-no-bundle", ["infer", "--bogus"],
         "unrecognized arguments: --bogus"),
    case("infer-no-inputs", ["infer", B], "Give --inputs FILE.npy"),
    case("infer-labels-without-inputs", ["infer", B, "--labels", "y.npy"], "Give --inputs"),
    case("infer-digits-and-inputs", ["infer", B, "--digits", *X], "give either --digits or"),
    case("infer-missing-bundle", ["infer", "missing.npz", *X],
         "Bundle missing.npz does not exist"),
    case("infer-garbage-bundle", ["infer", "afile", *X], "not a readable sparqforge bundle"),
    case("infer-accel-bad-field", ["infer", B, *X, "--accel", "tables.json"],
         "tables (power-exponent units) must be true or false, not 'yes'"),
    case("infer-accel-not-json", ["infer", B, *X, "--accel", "broken.json"], "is not JSON"),
    case("infer-accel-unknown", ["infer", B, *X, "--accel", "nope"], "is neither a preset"),
    case("infer-bad-backend", ["infer", B, *X, "--backend", "bogus"], "Backend must be golden"),
    # infer: inputs
    case("infer-inputs-missing", ["infer", B, "--inputs", "missing.npy"],
         "--inputs missing.npy does not exist"),
    case("infer-inputs-garbage", ["infer", B, "--inputs", "garbage.npy"],
         "--inputs garbage.npy is not a readable .npy array"),
    case("infer-inputs-npz", ["infer", B, "--inputs", "archive.npz"], "is an .npz archive"),
    case("infer-inputs-object", ["infer", B, "--inputs", "object.npy"], "not a readable .npy"),
    case("infer-inputs-empty", ["infer", B, "--inputs", "empty.npy"],
         "--inputs empty.npy is empty"),
    case("infer-inputs-complex", ["infer", B, "--inputs", "complex.npy"],
         "holds complex values"),
    case("infer-inputs-bool", ["infer", B, "--inputs", "bool.npy"], "holds boolean values"),
    case("infer-inputs-strings", ["infer", B, "--inputs", "str.npy"], "holds string values"),
    case("infer-inputs-nan", ["infer", B, "--inputs", "nan.npy"], "NaN or infinite values"),
    case("infer-inputs-transposed", ["infer", B, "--inputs", "transposed.npy"],
         "has shape (64, 5), not one item of 64 values per row"),
    case("infer-inputs-flat", ["infer", B, "--inputs", "flat.npy"], "has shape (320,)"),
    case("infer-inputs-other-layout", ["infer", B, "--inputs", "layout.npy"],
         "has shape (5, 4, 16)"),
    # infer: labels
    case("infer-labels-short", ["infer", B, *X, "--labels", "labels_short.npy"],
         "has shape (3,); give one label per input, an array of shape (5,)"),
    case("infer-labels-2d", ["infer", B, *X, "--labels", "labels_2d.npy"], "has shape (5, 1)"),
    case("infer-labels-strings", ["infer", B, *X, "--labels", "labels_str.npy"],
         "holds string values"),
    case("infer-labels-float", ["infer", B, *X, "--labels", "labels_float.npy"],
         "holds floating-point values"),
    case("infer-labels-out-of-range", ["infer", B, *X, "--labels", "labels_range.npy"],
         "has values outside 0..9"),
    # build and synth: the build directory checked before elaboration
    case("synth-no-board", ["synth"], "the following arguments are required: --board"),
    case("synth-unknown-board", ["synth", "--board", "nope"], "Unknown board 'nope'"),
    case("synth-output-is-file", ["synth", "--board", "icebreaker", "--out", "afile"],
         "afile exists and is not a directory"),
    case("synth-empty-output", ["synth", "--board", "icebreaker", "--out", ""],
         "--out is empty"),
    case("synth-missing-config", ["synth", "--board", "icebreaker", "--out", "b",
                                  "--config", "missing.json"], "missing.json"),
    case("synth-bad-config", ["synth", "--board", "icebreaker", "--out", "b",
                              "--config", "board.json"], "rows (array rows) must be an integer"),
    case("synth-unknown-option", ["synth", "--bogus"], "unrecognized arguments: --bogus"),
    case("build-output-under-file", ["build", "--board", "icebreaker", "--out", "afile/sub"],
         "afile is not a directory"),
    case("build-output-unwritable", ["build", "--board", "icebreaker", "--out", UNWRITABLE],
         "cannot create files in /proc", needs_proc),
    case("build-unknown-board", ["build", "--board", "nope"], "Unknown board 'nope'"),
    case("build-unknown-option", ["build", "--board", "icebreaker", "--bogus"],
         "unrecognized arguments: --bogus"),
    case("build-unknown-router", ["build", "--board", "icebreaker", "--out", "b",
                                  "--router", "router3"],
         "The router must be one of router1, router2, not 'router3'"),
    case("build-router-for-xray", ["build", "--board", "basys3", "--out", "b",
                                   "--router", "router1"], "for ECP5 and iCE40 boards"),
    case("build-seeds-unknown-router", ["build", "--board", "ulx3s-85f", "--out", "b",
                                        "--router", "router3", "--seeds", "2"],
         "The router must be one of router1, router2, not 'router3'"),
    case("synth-router-without-place", ["synth", "--board", "icebreaker", "--out", "b",
                                        "--router", "router1"],
         "--router chooses nextpnr's router; add --place"),
]


TEST_NAME = "test_bad_command_line_is_one_line_exit_2_and_leaves_nothing"


@pytest.fixture(scope="module")
def outcomes(request, bundle_path, tmp_path_factory):
    """case id -> (snapshot before, finished process, snapshot after) for every selected
    case, each run in a working directory of its own, several at a time: the cases spend
    their time starting Python, and one after the other they would take a minute."""
    cases = {item.callspec.id: item.callspec.params["args"] for item in request.session.items
             if getattr(item, "originalname", None) == TEST_NAME}
    folders = {name: _populate(tmp_path_factory.mktemp("case")) for name in cases}

    def run(name):
        args = [str(bundle_path) if arg == B else arg for arg in cases[name]]
        before = snapshot(folders[name])
        proc = run_in(folders[name], args)
        return name, (before, proc, snapshot(folders[name]))

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        return dict(pool.map(run, cases))


@pytest.mark.parametrize("args,message", CASES)
def test_bad_command_line_is_one_line_exit_2_and_leaves_nothing(request, outcomes, args,
                                                                 message):
    before, proc, after = outcomes[request.node.callspec.id]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparqforge: error: "), proc.stderr
    assert message in lines[0], lines[0]
    assert proc.stdout == ""
    assert after == before


def test_the_cases_cover_every_command():
    commands = {param.values[0][0] for param in CASES if param.values[0]}
    assert {"generate", "check", "bench", "demo", "export", "infer", "build",
            "synth"} <= commands
    assert len(CASES) >= 30


def test_the_checker_sees_a_file_left_behind(workdir):
    # The snapshot comparison catches a new file, a new .tmp and a rewritten file.
    before = snapshot(workdir)
    (workdir / "adir" / "inside.tmp").write_text("")
    assert snapshot(workdir) != before
    before = snapshot(workdir)
    (workdir / "afile").write_text("changed, and longer\n")
    assert snapshot(workdir) != before


@pytest.mark.skipif(not (shutil.which("head") and Path("/bin/bash").exists()),
                    reason="needs bash and head")
def test_json_piped_into_head_ends_without_a_traceback(workdir, bundle_path):
    command = (f"{sys.executable} -m sparqforge infer {bundle_path} --digits --json "
               f"| head -c 10; echo \"status=${{PIPESTATUS[0]}}\" >&2")
    proc = subprocess.run(command, shell=True, executable="/bin/bash", cwd=workdir,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout == '{"bundle":'
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    # 141 = 128 + SIGPIPE: the output was cut short (sparqforge.cli.main.EXIT_BROKEN_PIPE).
    assert proc.stderr.strip().splitlines() == ["status=141"]


def test_interrupt_is_one_line(monkeypatch, capsys):
    from sparqforge import cli
    cli_main = sys.modules["sparqforge.cli.main"]

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli_main, "cmd_bench", interrupted)
    assert cli.main(["bench", "dense"]) == 130
    assert capsys.readouterr().err == "sparqforge: interrupted\n"


def test_outputs_are_written_under_a_temporary_name(tmp_path, monkeypatch):
    from sparqforge.cli.outputs import write_files
    from sparqforge.errors import ConfigError

    written = write_files(tmp_path / "a" / "b", {"one.v": "1\n", "two.il": b"2\n"}, "-o")
    assert [p.read_text() for p in written] == ["1\n", "2\n"]
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["one.v", "two.il"]

    # A failure while renaming the second file: no temporary file, no new directory.
    real = os.replace
    calls = []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(dst))
        real(src, dst)
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(ConfigError, match="No space left on device"):
        write_files(tmp_path / "c" / "d", {"one.v": "1", "two.il": "2"}, "-o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
