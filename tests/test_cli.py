"""The `medsplit` command: help, the demo's JSON contract, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medsplit.topology.presets import PRESETS
from sites.cli import build_parser, main

REQUIRED = {"preset", "transport", "seed", "epochs", "metrics", "bytes", "flops_per_step", "audit"}


def test_help_explains_every_command_and_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "demo" in top and "split learning" in top
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    for action in demo._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help, f"{action.option_strings} has no help"
    for preset in ("vanilla", "ushaped", "vertical", "multitask", "multihop", "horizontal", "splitfed"):
        assert preset in text


def test_demo_json_contract(tmp_path, capsys):
    path = tmp_path / "out" / "run.json"
    rc = main(["demo", "--preset", "ushaped", "--transport", "local", "--epochs", "2", "--seed", "3",
               "--patients", "128", "--json", str(path), "--quiet", "--data", "memory"])
    assert rc == 0
    summary = json.loads(path.read_text())
    assert REQUIRED <= set(summary)
    assert (summary["preset"], summary["transport"], summary["seed"], summary["epochs"]) == ("ushaped", "local", 3, 2)
    assert set(summary["metrics"]["diagnosis"]) >= {"val_auc", "val_loss"}
    assert set(summary["bytes"]) == {"hospital", "server"}
    assert all(set(v) == {"sent", "received"} and v["sent"] > 0 for v in summary["bytes"].values())
    assert all(isinstance(v, int) and v > 0 for v in summary["flops_per_step"].values())
    for row in summary["audit"]:
        assert {"src", "dst", "edge", "kind", "count", "bytes"} <= set(row)
    assert len(summary["history"]) == 2
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "val_auc" in out


@pytest.mark.slow
def test_same_seed_same_numbers_across_processes(tmp_path):
    """From files, with PSI alignment: a second process (reading the cache) gives the same numbers.

    In-process runs seed the PSI order key; nodes in separate processes draw a fresh one (it protects
    the tokens sent between sites), so their batches differ from run to run.
    """
    runs = []
    for i in range(2):
        path = tmp_path / f"{i}.json"
        proc = subprocess.run([sys.executable, "-m", "sites.cli", "demo", "--preset", "vertical", "--epochs", "1",
                               "--patients", "60", "--workdir", str(tmp_path / "data"), "--json", str(path),
                               "--transport", "local"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(path.read_text()))
    assert runs[0]["metrics"] == runs[1]["metrics"]
    assert runs[0]["metrics"]["diagnosis"]["n"] > 0


def test_bad_values_are_clear_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--preset", "tripleshaped"])
    assert exc.value.code == 2
    assert "invalid choice: 'tripleshaped'" in capsys.readouterr().err
    path = tmp_path / "fail.json"
    assert main(["demo", "--epochs", "0", "--json", str(path)]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
    assert json.loads(path.read_text())["status"] == "failed"
    assert main(["demo", "--preset", "horizontal", "--sites", "1", "--quiet", "--workdir", str(tmp_path)]) == 2
    assert "needs at least 2 sites" in capsys.readouterr().err


def test_a_flag_the_preset_does_not_read_is_refused(capsys, tmp_path):
    assert main(["demo", "--preset", "vanilla", "--ushaped", "--quiet", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--ushaped does nothing for preset 'vanilla', which reads {', '.join(PRESETS['vanilla'].knobs)}" in err
    assert "fix: drop --ushaped" in err and not any(tmp_path.iterdir())  # refused before any file is written


@pytest.mark.slow
def test_console_script_runs_in_a_fresh_process(tmp_path):
    exe = Path(sys.executable).with_name("medsplit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sites.cli"]
    path = tmp_path / "run.json"
    proc = subprocess.run(cmd + ["demo", "--preset", "multitask", "--epochs", "1", "--patients", "64",
                                 "--workdir", str(tmp_path / "data"), "--json", str(path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning:medsplit"})
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(path.read_text())["metrics"]) == {"diagnosis", "mortality"}
