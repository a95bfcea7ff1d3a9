#!/bin/sh
# The docker-compose demo's inputs, written on the host, from the repository root:
#   docker/synth.sh
# writes the synthetic cohort that docker/docker-compose.yml mounts (three hospitals with CT images, an EHR
# table and labels), the study's identities, and one random secret per site, each in its own env file:
#   runs/cohorts/horizontal/site_{1,2,3}/     manifest.csv, dicom/, ehr.csv, site.yaml
#   runs/docker/identities/                   `medsplit provision`: a key pair per party, one folder each
#   runs/docker/secrets/hospital_{1,2,3}.env  MEDSPLIT_SECRET_HOSPITAL_N=... (for that site's container only)
#   runs/docker/secrets/server.env            every site's secret (for the server)
# Existing identities and secrets are kept. The containers run as uid 10001: as root, this script gives that
# uid the identity folders (their private keys stay readable by it alone); otherwise it says what to run. Settings (environment): ROOT (default runs), PATIENTS per site (default 200),
# SEED (default 0), MEDSPLIT (the command; default medsplit, or .venv/bin/python -m sites.cli).
# Without medsplit on this host, run it in the server image (which has it):
#   docker compose -f docker/docker-compose.yml build server
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/repo" -w /repo -e MEDSPLIT=medsplit \
#     --entrypoint sh medsplit-server:latest docker/synth.sh
set -eu

ROOT=${ROOT:-runs}
PATIENTS=${PATIENTS:-200}
SEED=${SEED:-0}
if [ -z "${MEDSPLIT:-}" ]; then
    if command -v medsplit >/dev/null 2>&1; then MEDSPLIT=medsplit
    elif [ -x .venv/bin/python ]; then MEDSPLIT=".venv/bin/python -m sites.cli"
    else echo "docker/synth.sh: medsplit is not installed here; run 'make install', or see the header of this file" >&2
         exit 2
    fi
fi

# shellcheck disable=SC2086  # MEDSPLIT may be a command with arguments
$MEDSPLIT synth --out "$ROOT/cohorts/horizontal" --layout horizontal --sites 3 --patients "$PATIENTS" --seed "$SEED"

identities="$ROOT/docker/identities"
if [ ! -f "$identities/parties.json" ]; then
    # shellcheck disable=SC2086
    $MEDSPLIT provision "$identities" --experiment "${EXPERIMENT:-experiments/${MEDSPLIT_EXPERIMENT:-splitfed}.yaml}"
fi
if [ "$(id -u)" = 0 ]; then
    chown -R 10001:10001 "$identities"/*/
else
    echo "note: the containers run as uid 10001; let it read the identities: sudo chown -R 10001 $identities/*/"
fi

secrets="$ROOT/docker/secrets"
mkdir -p "$secrets"
chmod 700 "$secrets"
umask 077
: > "$secrets/server.env.tmp"
for n in 1 2 3; do
    file="$secrets/hospital_$n.env"
    if [ ! -s "$file" ]; then
        printf 'MEDSPLIT_SECRET_HOSPITAL_%s=%s\n' "$n" "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > "$file"
    fi
    cat "$file" >> "$secrets/server.env.tmp"
done
mv "$secrets/server.env.tmp" "$secrets/server.env"
echo "secrets: $secrets/ (one env file per site, server.env for the server)"
echo "next: docker compose -f docker/docker-compose.yml up --build"
