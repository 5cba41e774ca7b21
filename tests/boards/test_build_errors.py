"""A tool that fails quietly (yosys with ``-q`` writes its error to its log only) still gives
a message that names the error, read from the newest log of the build folder."""

import pytest
from sparqforge.boards.build import _run
from sparqforge.errors import ToolError


def test_a_quiet_failure_names_the_error_in_the_log(tmp_path):
    (tmp_path / "top.rpt").write_text(
        "5.46 Executing ABC_OPS_REINTEGRATE pass\n"
        "ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in rtlil.cc.\n")
    with pytest.raises(ToolError) as info:
        _run(["sh", "-c", "exit 1"], tmp_path, None, "The Trellis flow")
    message = str(info.value)
    assert "top.rpt: ERROR: Assert `GetSize" in message
    assert "internal assertion" in message and "product_stages" in message


def test_a_failure_with_output_reports_the_output(tmp_path):
    with pytest.raises(ToolError, match="no such design"):
        _run(["sh", "-c", "echo no such design >&2; exit 3"], tmp_path, None, "yosys")


def test_a_failed_yosys_run_names_its_error():
    # yosys runs with -q; its error comes from its log, with the exit code (an ABC crash
    # in the array's block count printed nothing at all).
    from sparqforge.boards.synth import run_yosys

    with pytest.raises(ToolError, match=r"yosys failed \(exit code 1\):\nERROR: File "
                                        r"`nothere.il' not found"):
        run_yosys("read_rtlil nothere.il", {})
