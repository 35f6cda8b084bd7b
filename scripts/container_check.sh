#!/usr/bin/env bash
# Build the project's Dockerfile for real and run the image (docs/containers.md).
#
# Rootful podman (Debian's podman + runc) imports a Debian bookworm root file system made with
# debootstrap as a local base image, so no container registry is needed; the image is built with
# the CPU build of torch; then, inside it, with --network none, a read-only root (no tmpfs: only
# the mounted data, output and work folders are writable) and a non-root user: --version, the
# simulator (1 control + 1 patient), one participant, and `podman stop` of a running participant
# (exit 130 expected).
#
# Called by .ci/run after `make test`, not a pytest test: it needs root, apt, and the network
# (Debian mirror, PyPI), which the test suite must not use.
#
# Exit status: 0 when every step passed, or when the host cannot do the check at all (podman or
# debootstrap cannot be installed, the mirror is unreachable, podman cannot run a trivial
# container, no CPU build of torch is reachable): then it prints "container check skipped: <why>".
# 1 when the project's own build or one of the runs inside the image fails.
#
# Environment: CONTAINER_CHECK_DIR (scratch folder, default /var/tmp/pseudopet-container-check,
# removed at the end unless KEEP=1), DEBIAN_MIRROR, TEMPLATEFLOW_FETCH (default 0: TemplateFlow's
# server is not among the hosts CI reaches), KEEP=1 (keep the scratch folder and both images).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

SCRATCH=${CONTAINER_CHECK_DIR:-/var/tmp/pseudopet-container-check}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=localhost/pseudopet-base:bookworm
IMAGE=localhost/pseudopet:check
STOP_NAME=pseudopet-check-stop
TORCH_SPEC=$(sed -n 's/^TORCH_SPEC ?= *//p' Makefile)
START=$(date +%s)

say() { printf '[container check %4ds] %s\n' "$(( $(date +%s) - START ))" "$*"; }
skip() { echo "container check skipped: $*"; exit 0; }
fail() { echo "container check FAILED: $*" >&2; exit 1; }

cleanup() {
    podman rm -f "$STOP_NAME" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" != 1 ]; then
        podman rmi -f "$IMAGE" "$BASE_IMAGE" >/dev/null 2>&1 || true
        rm -rf "$SCRATCH"
    fi
}

# --- 1. the host's tools (infrastructure: skip when missing) ----------------------------------
[ "$(id -u)" = 0 ] || skip "needs root (rootful podman, debootstrap)"
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || skip "${missing[*]} missing and no apt-get to install them"
    say "installing ${missing[*]} (apt-get)"
    { timeout 300 apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq \
            --no-install-recommends podman runc debootstrap >/dev/null; } \
        || skip "podman, runc and debootstrap could not be installed with apt-get"
fi
trap cleanup EXIT
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"

# --- 2. the base image: debootstrapped Debian bookworm ---------------------------------------
say "debootstrap bookworm (minbase) from $MIRROR"
timeout 900 debootstrap --variant=minbase bookworm "$SCRATCH/rootfs" "$MIRROR" \
        >"$SCRATCH/debootstrap.log" 2>&1 \
    || skip "debootstrap could not make a bookworm root file system from $MIRROR ($(tail -1 "$SCRATCH/debootstrap.log"))"
tar -C "$SCRATCH/rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null \
    || skip "podman could not import the root file system as $BASE_IMAGE"
rm -rf "$SCRATCH/rootfs"

# Host differences, handled here and not in the Dockerfile: runc as the runtime (installed above;
# Debian's podman may prefer crun), and rlimits: podman's defaults (nofile 1048576, a high
# nproc) cannot be set where the host's hard limits are lower and CAP_SYS_RESOURCE is missing.
PODMAN=(podman --runtime runc)
ULIMITS=()
if ! "${PODMAN[@]}" run --rm --network none "$BASE_IMAGE" true 2>"$SCRATCH/probe.log"; then
    ULIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=32768:32768")
    "${PODMAN[@]}" run --rm --network none "${ULIMITS[@]}" "$BASE_IMAGE" true \
            2>>"$SCRATCH/probe.log" \
        || skip "podman cannot run a container from $BASE_IMAGE ($(tail -1 "$SCRATCH/probe.log"))"
    say "podman's default rlimits refused here ($(head -1 "$SCRATCH/probe.log" | grep -o 'rlimit type [0-9]*' || true)); using ${ULIMITS[*]}"
fi

# --- 3. the CPU build of torch (infrastructure: skip when none is reachable) ------------------
# The host's pip configuration may provide it from local disk (find-links with a "+cpu" wheel):
# ask the host's pip, offline, for the wheel and hand it to the build. Else PyTorch's CPU index.
BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TEMPLATEFLOW_FETCH=${TEMPLATEFLOW_FETCH:-0}"
            --build-arg "VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"
            --build-arg "VCS_REF=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
            --build-arg "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
BUILD_MOUNTS=()
mkdir -p "$SCRATCH/build/wheels"
if python3 -m pip download --quiet --no-index --no-deps --only-binary=:all: --python-version 3.11 \
        --dest "$SCRATCH/build/wheels" "$TORCH_SPEC" >/dev/null 2>&1 \
        && wheel=$(ls "$SCRATCH/build/wheels"/torch-*+cpu-*.whl 2>/dev/null | head -1) \
        && [ -n "$wheel" ]; then
    version=$(basename "$wheel" | cut -d- -f2)
    say "CPU torch from the host's pip configuration: $(basename "$wheel")"
    BUILD_ARGS+=(--build-arg "TORCH_SPEC=torch==$version")
    BUILD_MOUNTS+=(--volume "$SCRATCH/build/wheels:/mnt/pseudopet-build/wheels:ro")
    FIND_LINKS=/mnt/pseudopet-build/wheels
elif curl -fsS --max-time 20 -o /dev/null https://download.pytorch.org/whl/cpu/torch/; then
    say "CPU torch from https://download.pytorch.org/whl/cpu"
    BUILD_ARGS+=(--build-arg "TORCH_SPEC=$TORCH_SPEC"
                 --build-arg "TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    FIND_LINKS=
else
    skip "no CPU build of torch: the host's pip has no local '+cpu' wheel of $TORCH_SPEC and download.pytorch.org is unreachable"
fi

# pip inside the build gets this machine's certificate bundle (HTTPS may pass a proxy whose CA
# only the host trusts) and the wheel folder, through a pip.conf mounted for the build only.
CA=$(python3 -m pip config get global.cert 2>/dev/null || true)
if [ -z "$CA" ] || [ ! -f "$CA" ]; then
    CA=/etc/ssl/certs/ca-certificates.crt
fi
echo "[global]" >"$SCRATCH/build/pip.conf"
if [ -f "$CA" ]; then
    cp "$CA" "$SCRATCH/build/ca.crt"
    echo "cert = /mnt/pseudopet-build/ca.crt" >>"$SCRATCH/build/pip.conf"
    BUILD_MOUNTS+=(--volume "$SCRATCH/build/ca.crt:/mnt/pseudopet-build/ca.crt:ro")
fi
if [ -n "$FIND_LINKS" ]; then
    echo "find-links = $FIND_LINKS" >>"$SCRATCH/build/pip.conf"
fi
BUILD_MOUNTS+=(--volume "$SCRATCH/build/pip.conf:/etc/pip.conf:ro")

# --- 4. the project's image (the project's own: failures are errors from here on) -------------
# --format docker: podman's default OCI format would drop SHELL (pipefail) and HEALTHCHECK.
say "podman build (base $BASE_IMAGE)"
build_start=$(date +%s)
timeout 1800 "${PODMAN[@]}" build --format docker --pull=never "${ULIMITS[@]}" "${BUILD_ARGS[@]}" \
        "${BUILD_MOUNTS[@]}" --tag "$IMAGE" --file Dockerfile . >"$SCRATCH/build.log" 2>&1 \
    || { tail -40 "$SCRATCH/build.log" >&2; fail "podman build failed (log above)"; }
grep -E "^template: " "$SCRATCH/build.log" || true
say "built $IMAGE in $(( $(date +%s) - build_start )) s, $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"

# --- 5. runs inside the image ------------------------------------------------------------------
# Fully read-only root (podman would add tmpfs on /tmp, /var/tmp and /run by default): only the
# bind-mounted folders are writable, owned by the image's user. --no-healthcheck: podman wants
# systemd timers even for HEALTHCHECK NONE and logs an error where systemd does not run.
mkdir -p "$SCRATCH/data" "$SCRATCH/out" "$SCRATCH/work"
chown -R 1000:1000 "$SCRATCH/data" "$SCRATCH/out" "$SCRATCH/work"
RUN=("${PODMAN[@]}" run "${ULIMITS[@]}" --no-healthcheck --network none --read-only --read-only-tmpfs=false
     --user 1000:1000 --volume "$SCRATCH/data:/data" --volume "$SCRATCH/out:/out"
     --volume "$SCRATCH/work:/work")

version=$("${RUN[@]}" --rm "$IMAGE" --version) || fail "pseudopet --version exited $?"
say "pseudopet --version: $version"
[ "$version" = "pseudopet $(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)" ] \
    || fail "the image reports '$version'"

say "pseudopet-simulate /data/bids --controls 1 --patients 1"
"${RUN[@]}" --rm --entrypoint pseudopet-simulate "$IMAGE" /data/bids --controls 1 --patients 1 \
        --seed 1 --nprocs 1 >"$SCRATCH/simulate.log" 2>&1 \
    || { tail -20 "$SCRATCH/simulate.log" >&2; fail "pseudopet-simulate exited non-zero"; }
patient=$(awk -F'\t' 'NR > 1 && $0 ~ /patient/ {print $1; exit}' "$SCRATCH/data/bids/participants.tsv")
[ -n "$patient" ] || fail "the simulated participants.tsv lists no patient"
tail -1 "$SCRATCH/simulate.log"

say "pseudopet /data/bids /out participant --participant-label ${patient#sub-}"
"${RUN[@]}" --rm "$IMAGE" /data/bids /out participant --participant-label "${patient#sub-}" \
        -w /work --nprocs 1 --omp-nthreads 2 >"$SCRATCH/participant.log" 2>&1 \
    || { tail -30 "$SCRATCH/participant.log" >&2; fail "the participant run exited non-zero"; }
tail -1 "$SCRATCH/participant.log"
clusters=$(ls "$SCRATCH/out/$patient"/pet/*_clusters.tsv 2>/dev/null | head -1)
[ -n "$clusters" ] && [ -f "$SCRATCH/out/$patient.html" ] \
    || fail "the participant run left no cluster table or report in $SCRATCH/out"
# The clinical PDF (matplotlib under a read-only root: its cache must go to the work folder). A
# failed PDF does not fail the subject, so its absence and any logged error are checked here.
ls "$SCRATCH/out/$patient"/report/*_report.pdf >/dev/null 2>&1 \
    || { tail -30 "$SCRATCH/participant.log" >&2; fail "the participant run wrote no PDF report"; }
# console lines are "HH:MM:SS [LEVEL] message" (cli/environment.py: setup_logging)
! grep -qE "\[(ERROR|CRITICAL)\]" "$SCRATCH/participant.log" \
    || { grep -E "\[(ERROR|CRITICAL)\]" "$SCRATCH/participant.log" >&2
         fail "the participant run logged errors"; }
# The simulated focus must be the first-ranked cluster's region (seed 1: deterministic).
col() { awk -F'\t' -v want="$2" -v row="$3" 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == want) c = i}
        NR > 1 && ($1 == row || row == "") {print $c; exit}' "$1"; }
top=$(col "$clusters" region "")
focus=$(col "$SCRATCH/data/bids_truth/truth.tsv" focus "$patient")
say "$patient: $(( $(wc -l <"$clusters") - 1 )) cluster(s), first-ranked in $top; simulated focus $focus"
[ -n "$top" ] && [ "$top" = "$focus" ] || fail "the first-ranked cluster is '$top', the simulated focus '$focus'"

say "podman stop of a running participant (STOPSIGNAL SIGINT: exit 130 expected)"
control=$(awk -F'\t' 'NR > 1 && $0 ~ /control/ {print $1; exit}' "$SCRATCH/data/bids/participants.tsv")
"${RUN[@]}" --detach --name "$STOP_NAME" "$IMAGE" /data/bids /out participant \
    --participant-label "${control#sub-}" -w /work/stop --nprocs 1 --omp-nthreads 1 >/dev/null
sleep 20
[ "$(podman inspect --format '{{.State.Running}}' "$STOP_NAME")" = true ] \
    || { podman logs "$STOP_NAME" 2>&1 | tail -20 >&2; fail "the participant to stop ended early"; }
podman stop --time 60 "$STOP_NAME" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$STOP_NAME")
say "podman stop: exit code $code"
[ "$code" = 130 ] || { podman logs "$STOP_NAME" 2>&1 | tail -20 >&2; fail "podman stop gave exit $code, not 130"; }

say "passed in $(( $(date +%s) - START )) s"
