"""Deployment files checked without Docker: experiments/, sites/examples/, the images and the compose demo.

There is no Docker engine on the test machines, so the containers' commands are run as local processes: each
service's mounts are laid out under a temporary folder (files copied, folders linked), container paths in its
command are mapped there, and the server's address and port become 127.0.0.1 and a free port.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from data_adapters.config import load_site_config
from medsplit.config.experiment import load_experiment
from medsplit.plan import compile_topology
from medsplit.runstore import RunStore
from medsplit.topology.presets import PRESETS
from sites.cli import build_parser
from sites.cli import main as medsplit_main
from sites.launch import free_port
from sites.nodes import site_options

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
EXAMPLES = ROOT / "sites" / "examples"
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
SITE_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))
SITE_SERVICES = ("hospital_1", "hospital_2", "hospital_3")
PORT = "29500"  # the rendezvous port the compose file uses; mapped to a free one when run here


def _parse(argv: list[str]):
    """The CLI's own parser; an argparse failure (SystemExit) becomes a test failure naming the command."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`medsplit {' '.join(argv)}` is refused by the CLI (exit {exc.code})")


def _synth_argv(experiment: Path) -> list[str]:
    """The `medsplit synth ...` command documented in an experiment's header, without `medsplit`."""
    for line in experiment.read_text().splitlines():
        if not line.startswith("#"):
            break
        command = line.lstrip("# ")
        if command.startswith("medsplit synth "):
            return shlex.split(command)[1:]
    pytest.fail(f"{experiment.name} documents no `medsplit synth` command in its header")


def _under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


# --- experiments/ ------------------------------------------------------------------------------------


def test_there_is_an_experiment_for_every_preset():
    assert {load_experiment(p).topology.preset for p in EXPERIMENTS} == set(PRESETS)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_builds_its_topology_and_names_sites_that_read_its_cohort(path):
    exp = load_experiment(path)
    compile_topology(exp.build_topology())
    assert exp.name == path.stem
    synth = _parse(_synth_argv(path))
    cohort = ROOT / synth.out
    assert _under(exp.server.run_dir, ROOT / "runs"), "runs go under runs/ (ignored by git)"
    for site in exp.sites:
        assert site.config is not None and site.config.is_file() and _under(site.config, EXAMPLES)
        raw = yaml.safe_load(site.config.read_text())
        assert raw["site"] == site.name
        assert raw["node"]["secret_env"] == site.secret_env, "one secret variable per site, at both ends"
        for key, shape in site.shapes.items():
            modality = raw["modalities"][key]
            source = site.config.parent / modality["source"]
            assert _under(source, cohort), f"{site.name}.{key} reads {source}, not the cohort `medsplit synth` writes"
            if modality["kind"] == "dicom":
                assert tuple(shape) == (1, *modality["spatial_size"])


# --- sites/examples/ ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """experiments/ and sites/examples/ copied beside tiny cohorts written where the experiments' headers say."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "experiments", root / "experiments")
    shutil.copytree(EXAMPLES, root / "sites" / "examples")
    for argv in {_parse(a).out: a for a in map(_synth_argv, EXPERIMENTS)}.values():  # each documented command once
        argv[argv.index("--patients") + 1] = "6"
        for flag in ("--out", "--for"):  # relative to the repository root, as documented
            if flag in argv:
                argv[argv.index(flag) + 1] = str(root / argv[argv.index(flag) + 1])
        assert medsplit_main(argv) == 0, argv
    return root


def test_the_examples_readme_lists_every_site_example():
    readme = (EXAMPLES / "README.md").read_text()
    for path in SITE_EXAMPLES + sorted((EXAMPLES / "docker").glob("*.yaml")):
        assert path.relative_to(EXAMPLES).as_posix() in readme


@pytest.mark.parametrize("name", [p.name for p in SITE_EXAMPLES])
def test_site_example_parses_and_joins_the_experiment_it_names(mirror, name, monkeypatch):
    path = mirror / "sites" / "examples" / name
    cfg = load_site_config(path)
    monkeypatch.setenv(cfg.node.secret_env, "s3cret")
    # What `medsplit site --config` builds before it starts: node keys checked, experiment loaded, party found.
    opts = site_options(str(path), experiment=None, server=None, party=None, run_dir=None, fresh=False)
    assert opts.experiment.path.parent == (mirror / "experiments").resolve()
    assert opts.trust.peer(opts.experiment.sites[0].party) is None  # a site requires nothing of another site
    assert opts.trust.peers["server"].psk == b"s3cret"
    assert _under(opts.run_dir, mirror / "runs")
    entry = opts.experiment.site(cfg.site)
    assert set(entry.shapes) <= set(cfg.modalities)
    assert set(entry.labels) == set(cfg.labels)
    for m in cfg.modalities.values():
        if m.kind == "dicom":
            assert _under(m.cache_dir, mirror / "runs"), "a decoded-image cache next to the examples would be committed"


# --- docker/ ----------------------------------------------------------------------------------------


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def _dockerfile_argv(path: Path) -> list[str]:
    instr = dict(_dockerfile(path))  # the last ENTRYPOINT and CMD count
    return json.loads(instr["ENTRYPOINT"]) + json.loads(instr.get("CMD", "[]"))


@pytest.mark.parametrize("name,command", [("Dockerfile.site", "site"), ("Dockerfile.server", "server")])
def test_dockerfile_runs_medsplit_as_a_non_root_user_on_cpu_torch(name, command):
    path = DOCKER / name
    instr = _dockerfile(path)
    argv = _dockerfile_argv(path)
    assert argv[:2] == ["medsplit", command]
    _parse(argv[1:])
    args = dict(a.partition("=")[::2] for i, a in instr if i == "ARG")
    assert args["BASE_IMAGE"] == "python:3.11-slim" and instr[1] == ("FROM", "${BASE_IMAGE}")
    assert args["TORCH_INDEX"].endswith("/whl/cpu")
    make_torch = re.search(r"^TORCH\s*:=\s*torch==(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert make_torch and args["TORCH_VERSION"] == make_torch[1], "the image's torch is the Makefile's"
    runs = [a for i, a in instr if i == "RUN"]
    assert '--index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"' in runs[0], "torch first, from its index"
    users = [a for i, a in instr if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    sources = [w for i, a in instr if i == "COPY" for w in a.split()[:-1]]
    for src in sources:
        assert (ROOT / src).exists(), f"{name} copies {src}, which does not exist"
    copied = {Path(w).name for w in sources}
    # pyproject's [tool.setuptools.packages.find] include = ["medsplit*", ...] (no tomllib: Python 3.10 is supported)
    include = re.search(r"^include\s*=\s*\[([^\]]*)\]", (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert include, "pyproject.toml lists the packages it installs"
    packages = {p.rstrip("*") for p in re.findall(r'"([^"]+)"', include[1])}
    shipped = {p for p in packages if (ROOT / p).is_dir()} - ({"dashboard"} if command == "site" else set())
    assert shipped <= copied, "every package pyproject installs is copied"
    assert {"pyproject.toml", "README.md"} <= copied
    if command == "site":  # a site node serves no pages: neither the dashboard nor Streamlit goes into its image
        assert "dashboard" not in copied and not args.get("EXTRAS", '""').strip('"')


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default}, with the defaults (so the test does not depend on the caller's environment)."""
    def default(m: re.Match) -> str:
        assert m[2] is not None, f"${{{m[1]}}} in {COMPOSE.name} has no default"
        return m[2]
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", default, value)


def _compose() -> dict:
    return yaml.safe_load(_interpolate(COMPOSE.read_text()))


def _service_argv(compose: dict, name: str) -> list[str]:
    svc = compose["services"][name]
    dockerfile = _dockerfile_argv(_dockerfile_of(compose, svc["image"]))
    entry = svc.get("entrypoint")
    return (entry if entry is not None else dockerfile[:2]) + svc.get("command", dockerfile[2:])


def _dockerfile_of(compose: dict, image: str) -> Path:
    built = {s["image"]: s["build"] for s in compose["services"].values() if "build" in s}
    assert image in built, f"no service builds {image}"
    return (DOCKER / built[image]["context"] / built[image]["dockerfile"]).resolve()


def _volumes(svc: dict) -> list[tuple[str, str, str]]:
    """(source, container path, mode) of the short syntax SRC:DST[:MODE]."""
    out = []
    for spec in svc.get("volumes", []):
        src, dst, *mode = spec.split(":")
        out.append((src, dst, mode[0] if mode else "rw"))
    return out


def _is_bind(src: str) -> bool:
    return src.startswith((".", "/"))


def test_compose_refers_only_to_images_commands_and_paths_that_exist():
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"server", "dashboard", *SITE_SERVICES}
    for name, svc in services.items():
        if "build" in svc:
            assert (DOCKER / svc["build"]["context"]).resolve() == ROOT
            assert _dockerfile_of(compose, svc["image"]).is_file()
        argv = _service_argv(compose, name)
        assert argv[0] == "medsplit" and argv[1] in {"server", "site", "dashboard"}, (name, argv)
        _parse(argv[1:])
        for src, _dst, _mode in _volumes(svc):
            if not _is_bind(src):
                assert src in compose["volumes"], f"{name}: undeclared volume {src}"
                continue
            path = (DOCKER / src).resolve()
            if _under(path, ROOT / "runs"):  # written by docker/synth.sh: the slow test below runs it
                assert _under(path, ROOT / "runs" / "cohorts" / "horizontal") or \
                    path.parent == (ROOT / "runs" / "docker" / "identities").resolve(), (name, src)
            else:
                assert path.exists(), f"{name} mounts {src}, which does not exist"
        env_files = svc.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            assert _under(DOCKER / env_file, ROOT / "runs" / "docker" / "secrets"), (name, env_file)
    # Each party sees only its own identity folder (its private key), read-only, and passes it to medsplit.
    for name, svc in services.items():
        mounts = {dst: (src, mode) for src, dst, mode in _volumes(svc)}
        if name == "dashboard":
            assert "/identity" not in mounts
            continue
        assert mounts["/identity"] == (f"../runs/docker/identities/{name}", "ro"), name
        argv = _service_argv(compose, name)
        assert argv[argv.index("--identity") + 1] == "/identity", name
    # Each site sees only its own data folder, read-only, and its own site YAML; the others see no data.
    data = {}
    for name, svc in services.items():
        mounts = {dst: (src, mode) for src, dst, mode in _volumes(svc)}
        if name in SITE_SERVICES:
            src, mode = mounts["/data"]
            assert mode == "ro" and src.endswith(f"site_{name[-1]}")
            data[name] = src
            config, mode = mounts["/config/site.yaml"]
            assert mode == "ro" and Path(config).name == f"{name}.yaml"
            raw = yaml.safe_load((DOCKER / config).read_text())
            assert raw["site"] == name and raw["node"]["secret_env"] == f"MEDSPLIT_SECRET_{name.upper()}"
            assert svc["env_file"] == f"../runs/docker/secrets/{name}.env", "a site gets its own secret only"
            assert _service_argv(compose, name)[_service_argv(compose, name).index("--server") + 1] == f"server:{PORT}"
        else:
            assert "/data" not in mounts and not any("cohorts" in src for src, _ in mounts.values())
    assert len(set(data.values())) == len(SITE_SERVICES)
    # MEDSPLIT_EXPERIMENT picks the experiment; its documented values both fit the three hospitals.
    text = COMPOSE.read_text()
    assert "${MEDSPLIT_EXPERIMENT:-splitfed}" in text and "MEDSPLIT_EXPERIMENT=horizontal" in text
    for name in ("splitfed", "horizontal"):
        exp = load_experiment(ROOT / "experiments" / f"{name}.yaml")
        assert [(s.name, s.party) for s in exp.sites] == [(s, s) for s in SITE_SERVICES]
    server = _parse(_service_argv(compose, "server")[1:])
    assert str(server.port) == PORT and server.run_dir.startswith("/runs/")
    dashboard = _parse(_service_argv(compose, "dashboard")[1:])
    assert (dashboard.host, dashboard.port, dashboard.runs) == ("0.0.0.0", 8501, "/runs")


# --- the containers' commands, run here -----------------------------------------------------------------



class _Container:
    """What one service's container would see, laid out under ``root``: mounted files copied (so that paths
    relative to a config resolve inside the layout, as in the container), folders and volumes linked."""

    def __init__(self, compose: dict, name: str, root: Path, runs: Path, volumes: Path, port: int) -> None:
        self.name, self.root, self.port = name, root, port
        svc = compose["services"][name]
        for src, dst, _mode in _volumes(svc):
            if _is_bind(src):
                host = (DOCKER / src).resolve()
                if _under(host, ROOT / "runs"):
                    host = runs / host.relative_to(ROOT / "runs")
            else:
                host = volumes / src
                host.mkdir(parents=True, exist_ok=True)
            assert host.exists(), f"{name} mounts {src}: {host} does not exist after docker/synth.sh"
            target = root / dst.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if host.is_file():
                shutil.copyfile(host, target)
            else:
                target.symlink_to(host, target_is_directory=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSPLIT_")}
        self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env_file = svc.get("env_file")
        if env_file:
            host = runs / (DOCKER / env_file).resolve().relative_to(ROOT / "runs")
            for line in host.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    self.env[key] = value
        self.argv = self.map(_service_argv(compose, name))

    def map(self, argv: list[str]) -> list[str]:
        """Container paths to the layout; `medsplit` to this Python; the server's address to 127.0.0.1:port."""
        out = [sys.executable, "-m", "sites.cli"]
        for i, arg in enumerate(argv[1:], start=1):
            if arg.startswith("/"):
                arg = str(self.root / arg.lstrip("/"))
            elif arg == f"server:{PORT}":
                arg = f"127.0.0.1:{self.port}"
            elif arg == PORT and argv[i - 1] == "--port":
                arg = str(self.port)
            out.append(arg)
        return out


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
def test_the_compose_demo_runs_with_the_containers_commands(tmp_path, capsys):
    runs, volumes, logs = tmp_path / "runs", tmp_path / "volumes", tmp_path / "logs"
    logs.mkdir()
    env = {**os.environ, "ROOT": str(runs), "PATIENTS": "12", "MEDSPLIT": f"{sys.executable} -m sites.cli"}
    out = subprocess.run(["sh", str(DOCKER / "synth.sh")], check=False, cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    data_before = _snapshot(runs / "cohorts")
    compose, port = _compose(), free_port()
    containers = {name: _Container(compose, name, tmp_path / "containers" / name, runs, volumes, port)
                  for name in ("server", *SITE_SERVICES)}
    for name in SITE_SERVICES:
        assert {k for k in containers[name].env if k.startswith("MEDSPLIT_SECRET_")} == {
            f"MEDSPLIT_SECRET_{name.upper()}"}
    procs: dict[str, subprocess.Popen] = {}

    def logs_text() -> str:
        return "\n".join(f"--- {n}\n{(logs / f'{n}.log').read_text()[-2500:]}" for n in procs)

    try:
        for name, c in containers.items():  # the server first, as compose's depends_on starts it
            with open(logs / f"{name}.log", "w") as log:
                procs[name] = subprocess.Popen(c.argv, cwd=c.root, env=c.env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True)
        deadline = time.monotonic() + 120
        for name, proc in procs.items():
            try:
                code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not finish within 120 s:\n{logs_text()}")
            assert code == 0, f"{name} exited with {code}:\n{logs_text()}"
    finally:
        for proc in procs.values():  # only the processes this test started, by their group id
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

    run_dir = containers["server"].root / _parse(_service_argv(compose, "server")[1:]).run_dir.lstrip("/")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["preset"] == "splitfed"
    assert {r["src"] for r in summary["audit"]} >= set(SITE_SERVICES)
    assert RunStore(run_dir, readonly=True).info()["status"] == "completed"
    assert _snapshot(runs / "cohorts") == data_before, "a site wrote into its (read-only) data folder"
    # The compose file's audit command for a site (`--entrypoint medsplit hospital_N audit /run`), in-process.
    for name in SITE_SERVICES:
        argv = containers[name].map(["medsplit", "audit", "/run"])
        assert argv[1:3] == ["-m", "sites.cli"]
        assert medsplit_main(argv[3:]) == 0
        audit = capsys.readouterr().out
        assert "-> server" in audit and "activation" in audit, audit
