"""Every command, flag and choice users' scripts rely on is still there (new ones may be added, none renamed)."""

from __future__ import annotations

import argparse

import pytest

from sites.cli import build_parser

#: the command line as it was published: command -> its options and positional arguments
CONTRACT: dict[str, set[str]] = {
    "demo": {"--preset", "--transport", "--nopeek", "--epochs", "--seed", "--json", "--sites", "--ushaped", "--merge",
             "--batch-size", "--lr", "--patients", "--data", "--workdir", "--executor", "--run-dir", "--quiet"},
    "run": {"experiment", "--transport", "--run-dir", "--json", "--executor", "--quiet"},
    "server": {"--experiment", "--party", "--host", "--port", "--run-dir", "--transport", "--fresh", "--json"},
    "site": {"--config", "--experiment", "--server", "--party", "--run-dir", "--transport", "--fresh"},
    "audit": {"site_dir", "--json"},
    "predict": {"experiment", "--run-dir", "--out"},
    "data check": {"folder", "--config", "--modality", "--spatial-size", "--json"},
    "synth": {"--out", "--sites", "--patients", "--seed", "--layout", "--slices", "--size", "--overlap",
              "--image-modality"},
    "dashboard": {"--runs", "--port", "--host"},
}
CHOICES = {("demo", "--preset"): {"vanilla", "ushaped", "vertical", "multitask", "multihop", "horizontal", "splitfed"},
           ("demo", "--transport"): {"local", "gloo", "rpc"}, ("run", "--transport"): {"local", "gloo", "rpc"},
           ("server", "--transport"): {"gloo", "rpc"}, ("site", "--transport"): {"gloo", "rpc"},
           ("demo", "--data"): {"files", "memory"}, ("demo", "--executor"): {"sequential", "threaded"},
           ("demo", "--merge"): {"concat", "sum", "mean"}, ("synth", "--layout"): {"horizontal", "vertical"}}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in name.split():
        commands = _subparsers(parser)
        assert word in commands, f"command '{name}' is gone"
        parser = commands[word]
    return parser


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    out = {}
    for action in parser._actions:
        for name in action.option_strings or [action.dest]:
            out[name] = action
    return out


@pytest.mark.parametrize("command", list(CONTRACT))
def test_every_published_option_is_still_accepted(command):
    options = _options(_command(command))
    assert CONTRACT[command] <= set(options), CONTRACT[command] - set(options)
    for (cmd, flag), choices in CHOICES.items():
        if cmd == command:
            assert choices <= set(options[flag].choices), (flag, choices - set(options[flag].choices))


def test_the_contract_check_can_fail():
    with pytest.raises(AssertionError, match="command 'gone' is gone"):
        _command("gone")
