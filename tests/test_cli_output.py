"""The command line's console: known third-party warnings are filtered there (and only there), by category
and module, in its own process and in the Ray workers it starts; ``--debug`` shows them."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import write_synth

import run_recbole_hetcomp as cli

REPO = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(REPO / "run_recbole_hetcomp.py"), "-d", "synth", "--data_path=data/", "--teachers",
       "LightGCN", "--epochs=1", "--trajectory_top_n=30", "--no_student", "--show_progress=False"]


def _env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture
def synth_dir(tmp_path):
    write_synth(tmp_path / "data")
    return tmp_path


@pytest.mark.parametrize("debug", [False, True])
def test_known_warnings_are_hidden_unless_debug(synth_dir, debug):
    proc = subprocess.run([*RUN, *(["--debug"] if debug else [])], cwd=synth_dir, capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    shown = {name for name in ("FutureWarning", "UserWarning") if name in out}
    if debug:  # RecBole's dataset build (pandas) and LightGCN (torch.sparse) warn on every run
        assert shown == {"FutureWarning", "UserWarning"}, out[-2000:]
    else:
        assert not shown, out[-2000:]
        assert "[1/2] teacher LightGCN" in out  # our progress lines still show


def test_the_filters_name_a_category_and_a_module(monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "default")
    with warnings.catch_warnings():
        cli.quiet_known_warnings()
        ours = [f for f in warnings.filters[:len(cli.QUIET_WARNINGS)]]
        children = os.environ["PYTHONWARNINGS"].split(",")
    assert [(f[0], f[2].__name__, f[3].pattern) for f in ours] == [
        ("ignore", c, m.replace(".", r"\.") + r"\Z") for c, m in reversed(cli.QUIET_WARNINGS)]
    assert children == ["default", *(f"ignore::{c}:{m}" for c, m in cli.QUIET_WARNINGS)]


def test_the_library_never_filters_warnings():
    """Only the command line filters: no module of the package calls warnings.filterwarnings or simplefilter
    (torch, scipy and Ray add filters of their own on import, so the filter list itself is no evidence)."""
    import ast

    calls = []
    for path in sorted((REPO / "recbole_hetcomp").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("filterwarnings", "simplefilter"):
                calls.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not calls, calls
    assert "filterwarnings" in (REPO / "run_recbole_hetcomp.py").read_text()  # the check would see a call
