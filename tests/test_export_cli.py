"""``sparqforge export`` of a user's own PyTorch model: the three ``--model`` forms (a
function in a Python file, a model saved with ``torch.save``, a program saved with
``torch.export.save``) as real command lines, their bundles run on the golden device; every
bad model or calibration file is one line and exit code 2; the built-in models still export.
And a user's script that exports and runs a bundle prints nothing on stderr (no Amaranth
``UnusedElaboratable`` or other warnings)."""

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from sparqforge import cli
from sparqforge.sw import bundle as bundle_io
from sparqforge.sw import golden

#: The user's model file: a class of its own (not an nn.Sequential), BatchNorm to fold, a
#: functional ReLU and pooling, seeded random weights (accuracy is not the point).
USER_MODEL = '''
import torch
from torch import nn


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = nn.functional.max_pool2d(x, 2).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


def make_model():
    torch.manual_seed(0)
    model = SmallNet()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def make_pruned():
    from sparqforge.sw.prune import prune_model

    model = make_model()
    prune_model(model, 2, 4)
    return model


def make_dense_sequential():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


def in_training_mode():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def raises():
    raise RuntimeError("the checkpoint is missing\\nsecond line")


def returns_a_number():
    return 42


def returns_a_state_dict():
    return make_model().state_dict()


def needs_a_path(path):
    return torch.load(path)


NOT_A_FUNCTION = 3
'''


def user_env():
    """The environment of a user's shell: the default warning filters (so that any warning,
    an Amaranth ``UnusedElaboratable`` included, reaches stderr)."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return env


def run(args, cwd):
    return subprocess.run([sys.executable, "-m", "sparqforge", *args], cwd=cwd,
                          env=user_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with the user's model file, the model saved both ways, and calibration
    inputs (digits training images)."""
    from sparqforge.sw import digits

    folder = tmp_path_factory.mktemp("user")
    (folder / "user_model.py").write_text(USER_MODEL)
    np.save(folder / "calib.npy", digits.load_digits()[0][:96].numpy())
    # Save the model the way a user does, in a process of its own where the class is
    # user_model.SmallNet (torch.save pickles a reference to the class).
    script = textwrap.dedent("""
        import torch
        import user_model

        model = user_model.make_model()
        torch.save(model, "model.pt")
        program = torch.export.export(model, (torch.rand(1, 1, 8, 8),))
        torch.export.save(program, "model.pt2")
        torch.save(model.state_dict(), "weights.pt")
        torch.save(model.train(), "training.pt")
    """)
    subprocess.run([sys.executable, "-c", script], cwd=folder, check=True, env=user_env(),
                   timeout=300)
    np.save(folder / "flat.npy", np.zeros(64, dtype=np.float32))
    np.save(folder / "strings.npy", np.array(["a", "b"]))
    np.save(folder / "nan.npy", np.full((2, 1, 8, 8), np.nan, dtype=np.float32))
    (folder / "garbage.npy").write_bytes(b"not numpy\n")
    (folder / "garbage.pt").write_bytes(b"not a pickle\n")
    (folder / "garbage.pt2").write_bytes(b"not a zip\n")
    (folder / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (folder / "broken.py").write_text("def make_model(:\n")
    return folder


def golden_device_logits(path, x):
    """The bundle at ``path`` run on the golden device through the runtime, checked against
    the golden model."""
    from sparqforge.backends import open_device
    from sparqforge.sw.runtime.runner import Runner

    loaded = bundle_io.load(path)
    codes = loaded.quantize_input(x)
    device = open_device("golden", "demo")
    try:
        runner = Runner(loaded, device)
        runner.load()
        out = runner.infer(codes)
    finally:
        device.close()
    assert np.array_equal(out, golden.run_network(loaded.layers, codes))
    return loaded, out


#: The exports the tests check: name -> (--model, --quant).
EXPORTS = {
    "function": ("user_model.py:make_model", "power-w4"),
    "pickle": ("model.pt", "power-w4"),
    "program": ("model.pt2", "power-w4"),
    "uniform-w8a8": ("user_model.py:make_dense_sequential", "uniform-w8a8"),
    "sparse24-w4": ("user_model.py:make_pruned", "sparse24-w4"),
}


@pytest.fixture(scope="module")
def exported(workdir):
    """Every export of :data:`EXPORTS` as a command line, several at a time (each spends its
    time importing PyTorch): ``{name: (process, path)}``."""
    def export(name):
        model, quant = EXPORTS[name]
        out = workdir / f"{name}.npz"
        return name, (run(["export", "--model", model, "--quant", quant, "--calib",
                           "calib.npy", "-o", out.name], workdir), out)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        return dict(pool.map(export, EXPORTS))


@pytest.mark.parametrize("form", ["function", "pickle", "program"])
def test_each_model_form_exports_a_bundle_that_runs(workdir, exported, form):
    proc, path = exported[form]
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith(f"wrote {path.name} (") and "power-w4" in proc.stdout
    x = np.load(workdir / "calib.npy")[:32]
    loaded, out = golden_device_logits(path, x)
    assert [layer["input_method"] for layer in loaded.matmul_layers()] == [
        "uniform", "power", "power"]
    # The integer network follows the float model (random weights, so only roughly).
    sys.path.insert(0, str(workdir))
    try:
        import user_model
    finally:
        sys.path.remove(str(workdir))
    with torch.no_grad():
        reference = user_model.make_model()(torch.from_numpy(x)).numpy()
    agree = np.mean(loaded.dequantize_output(out).argmax(1) == reference.argmax(1))
    assert agree >= 0.8, agree


def test_the_three_forms_give_the_same_network(workdir, exported):
    x = np.load(workdir / "calib.npy")[:32]
    outputs = [golden_device_logits(exported[form][1], x)[1]
               for form in ("function", "pickle", "program")]
    for other in outputs[1:]:
        assert np.array_equal(outputs[0], other)


@pytest.mark.parametrize("quant", ["uniform-w8a8", "sparse24-w4"])
def test_other_quantizations(workdir, exported, quant):
    proc, path = exported[quant]
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    loaded, _ = golden_device_logits(path, np.load(workdir / "calib.npy")[:8])
    layers = loaded.matmul_layers()
    if quant == "sparse24-w4":
        assert all(layer["sparsity"] == [2, 4] for layer in layers)
    else:
        assert all(layer["weight_bits"] == 8 for layer in layers)


def test_builtin_model_still_exports(tmp_path, capsys):
    out = tmp_path / "mlp.npz"
    assert cli.main(["export", "--model", "mlp", "--quant", "uniform-w8a8", "-o",
                     str(out)]) == 0
    assert "quantized test accuracy" in capsys.readouterr().out
    golden_device_logits(out, np.zeros((2, 1, 8, 8), dtype=np.float32))


M = "user_model.py"
C = ["--calib", "calib.npy"]


@pytest.mark.parametrize("args,message", [
    (["--model", "rnn"], "--model rnn: invalid choice: 'rnn' is neither a built-in model "
                         "(mlp, cnn) nor a model file; give PATH.py:FUNCTION"),
    (["--model", "missing.py:make_model", *C], "missing.py does not exist"),
    (["--model", "missing.pt", *C], "missing.pt does not exist"),
    (["--model", M, *C], f"--model {M}: name the function that returns the model, "
                         f"{M}:FUNCTION"),
    (["--model", f"{M}:no_such", *C], f"{M} has no function 'no_such' (its functions are "
                                      f"in_training_mode, make_dense_sequential, make_model"),
    (["--model", f"{M}:NOT_A_FUNCTION", *C], "NOT_A_FUNCTION in user_model.py is a value of "
                                             "type int, not a function"),
    (["--model", f"{M}:raises", *C], "raises() raised RuntimeError: the checkpoint is "
                                     "missing; run it in Python to see where"),
    (["--model", f"{M}:needs_a_path", *C], "needs_a_path(path) needs arguments, but it is "
                                           "called with none"),
    (["--model", f"{M}:returns_a_number", *C], "gave a value of type int, not a "
                                               "torch.nn.Module"),
    (["--model", f"{M}:returns_a_state_dict", *C], "gave a dict (a state_dict?), not a model"),
    (["--model", f"{M}:in_training_mode", *C], "gave a model in training mode (Sequential has "
                                               "training=True); return model.eval() from "
                                               "in_training_mode()"),
    (["--model", "exits.py:f", *C], "importing exits.py called sys.exit()"),
    (["--model", "broken.py:make_model", *C], "importing broken.py raised SyntaxError"),
    (["--model", "weights.pt", *C], "--model weights.pt gave a dict (a state_dict?)"),
    (["--model", "training.pt", *C], "gave a model in training mode (SmallNet has "
                                     "training=True); call model.eval() before torch.save"),
    (["--model", "garbage.pt", *C], "--model garbage.pt: not a model saved with "
                                    "torch.save(model, path)"),
    (["--model", "garbage.pt2", *C], "--model garbage.pt2: not a program saved with "
                                     "torch.export.save"),
    (["--model", f"{M}:make_model"], f"--model {M}:make_model needs --calib FILE.npy"),
    (["--model", f"{M}:make_model", "--calib", "missing.npy"], "--calib missing.npy does not "
                                                               "exist"),
    (["--model", f"{M}:make_model", "--calib", "garbage.npy"], "--calib garbage.npy is not a "
                                                               "readable .npy array"),
    (["--model", f"{M}:make_model", "--calib", "flat.npy"], "--calib flat.npy has shape (64,); "
                                                            "give model inputs [N, ...]"),
    (["--model", f"{M}:make_model", "--calib", "strings.npy"], "holds string values"),
    (["--model", f"{M}:make_model", "--calib", "nan.npy"], "has 128 NaN or infinite values"),
    (["--model", "mlp", *C], "--calib is for your own models"),
    (["--model", f"{M}:make_model", "--quant", "sparse24-w4", *C],
     "is dense: its weights are not 2:4 sparse"),
])
def test_errors_are_one_line_and_exit_2(workdir, monkeypatch, capsys, args, message):
    monkeypatch.chdir(workdir)
    before = sorted(p.name for p in workdir.iterdir())
    assert cli.main(["export", *args, "-o", "never.npz"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparqforge: error: "), captured.err
    assert message in lines[0], lines[0]
    assert captured.out == ""
    assert sorted(p.name for p in workdir.iterdir() if p.name != "__pycache__") == [
        name for name in before if name != "__pycache__"]


def test_an_error_is_one_line_in_a_real_process(workdir):
    # The in-process cases above go through the same main(); this one shows the process
    # (exit status, nothing but the line on stderr, no traceback).
    proc = run(["export", "--model", f"{M}:raises", *C, "-o", "never.npz"], workdir)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "sparqforge: error: --model user_model.py:raises: raises() raised RuntimeError: the "
        "checkpoint is missing; run it in Python to see where"]


def test_the_checker_sees_a_second_stderr_line(workdir):
    # A warning in a user script does reach stderr under the environment these tests use,
    # so the empty-stderr assertions can fail.
    proc = subprocess.run([sys.executable, "-c", "import warnings; warnings.warn('x')"],
                          env=user_env(), capture_output=True, text=True, timeout=60)
    assert "UserWarning: x" in proc.stderr


USER_SCRIPT = '''
import numpy as np
import torch

from sparqforge.backends import open_device
from sparqforge.errors import ToolError
from sparqforge.sw import bundle, digits
from sparqforge.sw.export import export_model
from sparqforge.sw.quantize import quantize_model
from sparqforge.sw.runtime.runner import Runner

x = digits.load_digits()[0][:64]
qmodel = quantize_model(digits.make_model("mlp"), preset="power-w4", calib=x, steps=5)
path = bundle.save(export_model(qmodel, x, name="mlp"), "mlp.npz")
loaded = bundle.load(path)
codes = loaded.quantize_input(x.numpy())
for backend in BACKENDS:
    try:
        device = open_device(backend, "demo", quiet=True)
    except ToolError:
        print(backend, "unavailable")
        continue
    try:
        runner = Runner(loaded, device)
        runner.load()
        print(backend, runner.infer(codes).argmax(1)[:8])
    finally:
        device.close()
'''


@pytest.mark.parametrize("backends", [["golden"], ["verilator"]], ids=["golden", "verilator"])
def test_a_user_script_prints_nothing_on_stderr(tmp_path, backends):
    # The Verilator backend builds (elaborates) the Accelerator: where an Amaranth component
    # created and never elaborated would warn UnusedElaboratable when collected. Without
    # Verilator it still elaborates the design before the build reports the missing tool.
    script = f"BACKENDS = {backends!r}\n" + USER_SCRIPT
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=user_env(),
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith(backends[0])
