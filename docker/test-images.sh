#!/bin/sh
# Builds the server and site images and runs the compose demo in a real Docker engine, with identities from
# `medsplit provision`; checks that the run completes, that each site's audit lists what left it, and that the
# site image holds neither the dashboard nor Streamlit. From the repository root, as a user who may use Docker
# (root starts the engine itself where none runs):
#   docker/test-images.sh
# Where no engine runs or can start, it says so and exits 2. Not part of `make test`.
#
# Where the default base image (python:3.11-slim) cannot be pulled, it builds one from Debian's packages:
# debootstrap (minbase, bookworm, python3) -> `docker import`, with a virtual environment on PATH and this
# machine's CA bundle (pip here trusts it). Where the PyTorch index cannot be reached, a local CPU wheel of the
# Makefile's torch (from pip's find-links) goes into docker/wheels, which the Dockerfiles prefer.
# Containers use the host's network (this machine's engine runs without a bridge): a generated override puts
# every service on it and the rendezvous on a free port. Settings (environment): PATIENTS (default 40),
# MEDSPLIT_EXPERIMENT (splitfed), KEEP=1 keeps the containers and volumes, TIMEOUT (seconds, default 1200).
set -eu

cd "$(dirname "$0")/.."
PATIENTS=${PATIENTS:-40}
EXPERIMENT=${MEDSPLIT_EXPERIMENT:-splitfed}
TIMEOUT=${TIMEOUT:-1200}
PROJECT=medsplit-demo
TORCH_VERSION=$(sed -n 's/^TORCH *:= *torch==//p' Makefile)
say() { printf 'test-images: %s\n' "$*"; }
fail() { printf 'test-images: FAILED: %s\n' "$*" >&2; exit 1; }

# --- an engine ------------------------------------------------------------------------------------------
if ! command -v docker >/dev/null 2>&1; then
    say "no Docker engine can start here: the docker command is not installed (Debian: apt-get install docker.io)"
    exit 2
fi
if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null 2>&1; then
        mkdir -p runs/docker
        # overlay2 where the kernel allows it (fast); vfs otherwise (works everywhere, copies every layer).
        for driver in overlay2 vfs; do
            say "starting dockerd ($driver storage, no bridge, no iptables; containers use the host's network)"
            nohup dockerd --iptables=false --bridge=none --storage-driver="$driver" >runs/docker/dockerd.log 2>&1 &
            dockerd_pid=$!
            n=0
            until docker info >/dev/null 2>&1 || [ "$n" -gt 60 ] || ! kill -0 "$dockerd_pid" 2>/dev/null; do
                n=$((n + 1))
                sleep 1
            done
            docker info >/dev/null 2>&1 && break
            kill "$dockerd_pid" 2>/dev/null || true
            wait "$dockerd_pid" 2>/dev/null || true
        done
        if ! docker info >/dev/null 2>&1; then
            say "no Docker engine can start here: dockerd did not answer (overlay2, then vfs); its log:"
            tail -5 runs/docker/dockerd.log
            exit 2
        fi
    else
        say "no Docker engine can start here: none is running, and starting one needs root and dockerd"
        exit 2
    fi
fi
say "engine: $(docker version --format '{{.Server.Version}}' 2>/dev/null), storage $(docker info --format '{{.Driver}}' 2>/dev/null)"

# --- a compose tool -------------------------------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
    COMPOSE="docker compose"
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE="docker-compose"
else
    fail "neither 'docker compose' nor 'docker-compose' is installed (Debian: apt-get install docker-compose)"
fi

# --- a base image ---------------------------------------------------------------------------------------
BASE=python:3.11-slim
if ! timeout 60 docker pull -q "$BASE" >/dev/null 2>&1; then
    BASE=medsplit-base:bookworm
    if ! docker image inspect medsplit-debian:bookworm >/dev/null 2>&1; then
        command -v debootstrap >/dev/null 2>&1 || fail "python:3.11-slim cannot be pulled and debootstrap is not installed"
        say "python:3.11-slim cannot be pulled: making a base from Debian's packages (debootstrap, a minute or two)"
        root=$(mktemp -d)
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" >/dev/null
        tar -C "$root" -c . | docker import - medsplit-debian:bookworm >/dev/null
        rm -rf "$root"
    fi
    ctx=$(mktemp -d)
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
    cat >"$ctx/Dockerfile" <<'EOF'
FROM medsplit-debian:bookworm
# This machine's CA bundle: pip reaches the package registry through it.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip --version
ENV PATH=/opt/venv/bin:$PATH PIP_CERT=/etc/ssl/certs/ca-certificates.crt
EOF
    DOCKER_BUILDKIT=0 docker build -q -t "$BASE" "$ctx" >/dev/null
    rm -rf "$ctx"
    say "base image: $BASE (debootstrap bookworm + a virtual environment)"
fi

# --- torch: the CPU wheel -------------------------------------------------------------------------------
TORCH_INDEX=https://download.pytorch.org/whl/cpu
if ! timeout 20 python3 -c "import urllib.request; urllib.request.urlopen('$TORCH_INDEX/torch/', timeout=15)" \
        >/dev/null 2>&1; then
    wheel=""
    for dir in $(printf '%s' "${PIP_FIND_LINKS:-}" | tr ' ' '\n') /opt/wheels; do
        for w in "$dir"/torch-"$TORCH_VERSION"+cpu-*.whl; do [ -f "$w" ] && wheel=$w; done
    done
    [ -n "$wheel" ] || fail "the PyTorch index cannot be reached and no local torch-$TORCH_VERSION+cpu wheel was found"
    cp "$wheel" docker/wheels/
    TORCH_INDEX=$(.venv/bin/python -m pip config get global.index-url 2>/dev/null || echo https://pypi.org/simple)
    say "the PyTorch index cannot be reached: using $(basename "$wheel") from docker/wheels"
fi

# --- the images -----------------------------------------------------------------------------------------
for kind in server site; do
    say "building medsplit-$kind (torch $TORCH_VERSION CPU)"
    DOCKER_BUILDKIT=0 docker build --network host -q -f "docker/Dockerfile.$kind" --build-arg "BASE_IMAGE=$BASE" \
        --build-arg "TORCH_INDEX=$TORCH_INDEX" -t "medsplit-$kind:latest" . >/dev/null \
        || fail "docker build of docker/Dockerfile.$kind"
done
rm -f docker/wheels/*.whl
for module in dashboard streamlit; do
    if docker run --rm --network none --entrypoint python medsplit-site:latest -c "import $module" >/dev/null 2>&1; then
        fail "the site image ships $module"
    fi
done
say "the site image has neither the dashboard nor Streamlit"
say "images: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^medsplit-\(server\|site\)' | tr '\n' ' ')"

# --- the demo's inputs: cohort, identities, secrets -------------------------------------------------------
if [ -x .venv/bin/python ]; then MEDSPLIT=".venv/bin/python -m sites.cli"; else MEDSPLIT=medsplit; fi
$COMPOSE -p "$PROJECT" -f docker/docker-compose.yml down -v >/dev/null 2>&1 || true
rm -rf runs/docker/identities runs/cohorts/horizontal
MEDSPLIT="$MEDSPLIT" PATIENTS="$PATIENTS" MEDSPLIT_EXPERIMENT="$EXPERIMENT" sh docker/synth.sh >/dev/null
say "provisioned: $(tr -d '\n ' <runs/docker/identities/parties.json | grep -o '"fingerprint":"[^"]*"' | wc -l) identities in runs/docker/identities"

# --- the compose demo, on the host's network ------------------------------------------------------------
PORT=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
FILES="-f docker/docker-compose.yml"
if [ "$COMPOSE" = docker-compose ]; then  # Compose v1 knows no top-level 'name:' (the project is -p)
    grep -v '^name:' docker/docker-compose.yml >docker/.compose-v1.yml
    FILES="-f docker/.compose-v1.yml"
fi
{
    echo "services:"
    echo "  server:"
    echo "    network_mode: host"
    echo "    command: [\"--experiment\", \"/config/experiment.yaml\", \"--host\", \"127.0.0.1\", \"--port\", \"$PORT\","
    echo "              \"--run-dir\", \"/runs/$EXPERIMENT\", \"--identity\", \"/identity\"]"
    for n in 1 2 3; do
        echo "  hospital_$n:"
        echo "    network_mode: host"
        echo "    command: [\"--config\", \"/config/site.yaml\", \"--server\", \"127.0.0.1:$PORT\", \"--identity\", \"/identity\"]"
    done
} >docker/.compose-hostnet.yml
FILES="$FILES -f docker/.compose-hostnet.yml"
cleanup() {
    if [ "${KEEP:-0}" != 1 ]; then
        # shellcheck disable=SC2086
        $COMPOSE -p "$PROJECT" $FILES down -v >/dev/null 2>&1 || true
    fi
    rm -f docker/.compose-v1.yml docker/.compose-hostnet.yml
}
trap cleanup EXIT
say "running the compose demo ($EXPERIMENT, 3 hospitals, rendezvous on 127.0.0.1:$PORT)"
# shellcheck disable=SC2086
MEDSPLIT_EXPERIMENT=$EXPERIMENT timeout "$TIMEOUT" $COMPOSE -p "$PROJECT" $FILES up --no-build --no-color \
    server hospital_1 hospital_2 hospital_3 >runs/docker/compose.log 2>&1 || true
grep -E "server.*(epoch [0-9]+/|authenticated|refused|error)" runs/docker/compose.log | tail -8 || true
for svc in server hospital_1 hospital_2 hospital_3; do
    # shellcheck disable=SC2086
    id=$($COMPOSE -p "$PROJECT" $FILES ps -q "$svc")
    code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
    [ "$code" = 0 ] || { tail -30 runs/docker/compose.log; fail "$svc exited with $code (log: runs/docker/compose.log)"; }
done
summary=$(docker run --rm --network none -v "${PROJECT}_runs:/runs:ro" --entrypoint cat medsplit-server:latest \
    "/runs/$EXPERIMENT/summary.json")
printf '%s' "$summary" | python3 -c "
import json, sys
s = json.load(sys.stdin)
assert s['status'] == 'completed', s.get('status')
print('test-images: the run completed:', ', '.join(f\"{t} val AUC {m['val_auc']:.3f}\" for t, m in s['metrics'].items()),
      '| epochs', len(s['history']), '| session', s['session'])
" || fail "the server's summary does not say completed"
for n in 1 2 3; do
    # shellcheck disable=SC2086
    audit=$(MEDSPLIT_EXPERIMENT=$EXPERIMENT $COMPOSE -p "$PROJECT" $FILES run --rm --no-deps --entrypoint medsplit \
        "hospital_$n" audit /run 2>&1) || { printf '%s\n' "$audit"; fail "medsplit audit at hospital_$n"; }
    printf '%s' "$audit" | grep -q -- "-> server" && printf '%s' "$audit" | grep -q activation \
        || { printf '%s\n' "$audit"; fail "hospital_$n's audit does not list the activations it sent"; }
    say "hospital_$n's audit: $(printf '%s' "$audit" | grep -c -- '->') lines of what left it, e.g. $(printf '%s' "$audit" | grep -m1 -- '->' | tr -s ' ')"
done
say "OK: images built, the compose demo ran with provisioned identities, every site's audit lists what left it"
