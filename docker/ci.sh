#!/usr/bin/env bash
# Build the Docker images for real and run pfbench inside them (CI runs this after the tests).
#
#   bash docker/ci.sh                          # CPU image (BuildKit and legacy builder), then CUDA
#   PFBENCH_DOCKER_CUDA=0 bash docker/ci.sh    # CPU image only
#
# Offline-capable, the route docker/README.md ("Offline") describes:
#   1. hadolint on both Dockerfiles;
#   2. a Docker engine: the running one, else dockerd started here (installed with apt-get if missing,
#      as root), stopped again at the end;
#   3. the base image: the Dockerfiles' default if it can be pulled, else one made from Debian's
#      packages (debootstrap --variant=minbase, docker import), reused on later runs;
#   4. the lock's wheels fetched by the host's pip into a wheelhouse (the host already resolves the
#      pinned torch to its CPU build) and served as a local index on 127.0.0.1 (scripts/wheel_index.py);
#      the builds use `--network host`, so no container needs the internet or the host's certificates;
#   5. the CPU image built with BuildKit and with the legacy builder; in it: the smoke sweep, the report
#      of that sweep, and the main job (whose metrics must equal a host run's), as a non-root uid whose
#      files must land owned by it; the runtime image must not ship test or lint tools;
#   6. the CUDA image, from PyPI's CUDA torch wheels (fetched by the host too), built and imported
#      without a GPU; a short CPU run inside it. `device=cuda` needs a GPU and is not run here.
#
# Exit status: 0 when everything ran and passed, or when a step could not run for reasons outside the
# project (no engine can be installed or started, no base image, wheels not reachable, not enough disk
# for the engine): those print one `SKIPPED:` line saying what was not checked. 1 on a real failure
# (lint, build or run).
#
# Disk: the CPU images and their runs need about 10 GB free under the engine's root directory, the
# CUDA image about 16 GB (peaks measured from an empty build cache: 7.6 GB and 11.3 GB). Each build
# checks first; when space is short and the engine was started here, the build cache is pruned and the
# check repeated. When the engine was started here (CI), the images built here and the build cache are
# removed at the end, so that repeated runs do not fill the disk; a running engine keeps them (only the
# untagged layers of re-used tags go). PFBENCH_DOCKER_KEEP=1 keeps everything, =0 removes them always.
# Environment: PFBENCH_DOCKER_CACHE (wheelhouses; default ~/.cache/pfbench-docker),
# PFBENCH_DEBIAN_MIRROR (debootstrap), PFBENCH_CUDA_INDEX_URL (where the CUDA wheels come from),
# PFBENCH_DOCKER_KEEP (see Disk), PFBENCH_DOCKER_NEED_CPU_GB / _NEED_CUDA_GB (the free space asked for).

set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
CACHE=${PFBENCH_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pfbench-docker}
MIRROR=${PFBENCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOCAL_BASE=pfbench-base:bookworm-py311
LOG=$(mktemp -d /tmp/pfbench-docker-ci.XXXXXX)
DOCKERD_PID=
SERVER_PIDS=()
SUMMARY=()
BUILT=()          # the image tags this run built (removed at the end unless kept)
DOCKER_ROOT=/var/lib/docker  # the engine's root directory, read from the engine once it answers
# Free space (GB) to ask for before building: the measured peaks (7.6 GB for both CPU builds and the
# runs; 11.3 GB for the CUDA build, after the legacy image is removed) with a margin.
NEED_CPU_GB=${PFBENCH_DOCKER_NEED_CPU_GB:-10}
NEED_CUDA_GB=${PFBENCH_DOCKER_NEED_CUDA_GB:-16}

say() { printf '[docker-ci %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
note() { SUMMARY+=("$*"); say "$*"; }
finish() {
    say "summary:"
    for line in "${SUMMARY[@]}"; do printf '  %s\n' "$line"; done
}
skip() { note "SKIPPED: $*"; finish; exit 0; }
fail() {
    # A full disk is the machine's state, not the project's: say so plainly instead of failing.
    if [ -n "${2:-}" ] && [ -f "$2" ] && grep -q -i 'no space left on device' "$2"; then
        say "last lines of $2:"; tail -n 15 "$2"
        skip "$1: the disk ran out (no space left on device; $(free_gb) GB free under $DOCKER_ROOT now). Free space there (e.g. \`docker builder prune\`) and run again"
    fi
    say "FAILED: $*"
    [ -n "${2:-}" ] && [ -f "$2" ] && { say "last lines of $2:"; tail -n 40 "$2"; }
    finish
    exit 1
}
free_gb() {  # whole GB free on the filesystem holding the engine's root directory
    local dir=$DOCKER_ROOT
    while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
    df -P -B1G "$dir" | awk 'NR == 2 {print $4}'
}
# May this run clear the engine's build cache and its own images? Yes when it started the engine
# (CI), or when asked to (PFBENCH_DOCKER_KEEP=0); never when PFBENCH_DOCKER_KEEP=1.
may_prune() {
    [ "${PFBENCH_DOCKER_KEEP:-}" != 1 ] && { [ -n "$DOCKERD_PID" ] || [ "${PFBENCH_DOCKER_KEEP:-}" = 0 ]; }
}
prune() {  # the build cache and untagged images (earlier builds' layers under a re-used tag)
    docker builder prune -af >/dev/null 2>&1
    docker image prune -f >/dev/null 2>&1
}
need_space() {  # need_space <GB> <what>: skip <what> (with one line) when the engine's disk is short
    local need=$1 what=$2 have
    have=$(free_gb)
    if [ "$have" -lt "$need" ] && may_prune; then
        say "$have GB free under $DOCKER_ROOT, $what needs about $need GB: pruning the build cache and untagged images"
        prune
        have=$(free_gb)
    fi
    [ "$have" -ge "$need" ] \
        || skip "$what NOT checked: it needs about $need GB free under $DOCKER_ROOT, there are $have GB. Free space there (docker builder prune, docker image prune) and run again"
}
remove_built() {
    local tag tags=() before
    for tag in "${BUILT[@]}"; do docker image inspect "$tag" >/dev/null 2>&1 && tags+=("$tag"); done
    if ! may_prune; then
        docker image prune -f >/dev/null 2>&1  # only the untagged layers the re-used tags left behind
        [ ${#tags[@]} -gt 0 ] && say "kept the images built here: ${tags[*]} (PFBENCH_DOCKER_KEEP=0 removes them)"
        return 0
    fi
    before=$(free_gb)
    [ ${#tags[@]} -gt 0 ] && docker image rm -f "${tags[@]}" >/dev/null 2>&1
    prune
    say "removed the images built here (${tags[*]:-none}) and the build cache: $before -> $(free_gb) GB free (PFBENCH_DOCKER_KEEP=1 keeps them)"
}
cleanup() {
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    docker info >/dev/null 2>&1 && remove_built
    if [ -n "$DOCKERD_PID" ]; then
        say "stopping the dockerd started here (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
    rm -rf "$LOG"
}
trap cleanup EXIT
mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

# --------------------------------------------------------------------------- 1. lint (no engine)
[ -x "$ROOT/.venv/bin/hadolint" ] || fail "no .venv/bin/hadolint: run \`make install\` first"
"$ROOT/.venv/bin/hadolint" --no-color docker/Dockerfile docker/Dockerfile.cuda \
    || fail "hadolint found problems in docker/Dockerfile or docker/Dockerfile.cuda (above)"
note "hadolint: docker/Dockerfile, docker/Dockerfile.cuda clean"

# --------------------------------------------------------------------------- 2. engine
if docker info >/dev/null 2>&1; then
    say "using the running Docker engine"
else
    if ! command -v dockerd >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing docker.io with apt-get"
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq docker.io; } \
                >"$LOG/apt.log" 2>&1 || skip "no Docker engine here and \`apt-get install docker.io\` failed ($(tail -n 1 "$LOG/apt.log"))"
        else
            skip "no Docker engine (dockerd) here, and installing one needs root and apt-get"
        fi
    fi
    say "starting dockerd"
    dockerd >"$LOG/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || { DOCKERD_PID=; skip "dockerd exited at start: $(tail -n 1 "$LOG/dockerd.log")"; }
        sleep 1
    done
    docker info >/dev/null 2>&1 || skip "dockerd did not answer within 60 s: $(tail -n 1 "$LOG/dockerd.log")"
fi
DOCKER_ROOT=$(docker info -f '{{.DockerRootDir}}' 2>/dev/null || echo "$DOCKER_ROOT")
note "engine: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}' 2>/dev/null)"

# Which CLI builds with BuildKit: one with the buildx plugin, or a client older than 23 (whose
# BuildKit support is built in; Debian's docker.io is 20.10). Newer clients without buildx refuse.
BUILDKIT_CLI=
if docker buildx version >/dev/null 2>&1; then
    BUILDKIT_CLI=$(command -v docker)
else
    for cli in $(command -v docker) /usr/bin/docker; do
        [ -x "$cli" ] || continue
        major=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
        if [ -n "$major" ] && [ "$major" -lt 23 ]; then BUILDKIT_CLI=$cli; break; fi
    done
fi

# --------------------------------------------------------------------------- 3. base image
OFFICIAL_BASE=$(sed -n 's/^ARG BASE_IMAGE=//p' docker/Dockerfile)
if docker image inspect "$OFFICIAL_BASE" >/dev/null 2>&1 \
        || timeout 300 docker pull -q "$OFFICIAL_BASE" >"$LOG/pull.log" 2>&1; then
    BASE=$OFFICIAL_BASE
    note "base: $BASE (the Dockerfiles' default)"
elif docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    BASE=$LOCAL_BASE
    note "base: $BASE (made from Debian's packages by an earlier run; $OFFICIAL_BASE cannot be pulled)"
else
    say "$OFFICIAL_BASE cannot be pulled ($(tail -n 1 "$LOG/pull.log")); making a base from Debian's packages"
    if ! command -v debootstrap >/dev/null; then
        { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq debootstrap; } \
            >"$LOG/apt-debootstrap.log" 2>&1 || skip "no base image: $OFFICIAL_BASE cannot be pulled and debootstrap is not installed (apt-get install debootstrap, as root)"
    fi
    t0=$SECONDS
    timeout 1200 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,make \
        bookworm "$LOG/rootfs" "$MIRROR" >"$LOG/debootstrap.log" 2>&1 \
        || skip "no base image: $OFFICIAL_BASE cannot be pulled and debootstrap from $MIRROR failed ($(tail -n 1 "$LOG/debootstrap.log"))"
    rm -rf "$LOG"/rootfs/var/cache/apt/archives/*.deb "$LOG"/rootfs/var/lib/apt/lists/*
    tar -C "$LOG/rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null \
        || fail "docker import of the debootstrap tree failed"
    rm -rf "$LOG/rootfs"
    BASE=$LOCAL_BASE
    note "base: $BASE made from Debian bookworm's packages in $((SECONDS - t0)) s ($(mb "$BASE"))"
fi

# --------------------------------------------------------------------------- 4. wheels, local index
TORCH=$(sed -n 's/^torch==//p' requirements.lock)
BOOTSTRAP=$(sed -n 's/^BOOTSTRAP = //p' Makefile)
WH_CPU=$CACHE/wheels-cpu
mkdir -p "$WH_CPU"
t0=$SECONDS
# shellcheck disable=SC2086  # BOOTSTRAP is three requirement words
"$PY" -m pip wheel --no-deps -q -w "$WH_CPU" -r requirements.lock $BOOTSTRAP >"$LOG/wheels-cpu.log" 2>&1 \
    || skip "the host's pip could not fetch the locked wheels into $WH_CPU ($(tail -n 1 "$LOG/wheels-cpu.log"))"
ls "$WH_CPU"/torch-"$TORCH"+cpu-*.whl >/dev/null 2>&1 \
    || skip "the host's pip did not resolve torch==$TORCH to its CPU build (no torch-$TORCH+cpu wheel in $WH_CPU): give it the CPU index, e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu"
note "wheelhouse: $(ls "$WH_CPU" | wc -l) wheels in $WH_CPU ($((SECONDS - t0)) s)"

serve() {  # serve <wheel dir>... [--exclude GLOB]: starts scripts/wheel_index.py, sets URL
    local log=$LOG/index-${#SERVER_PIDS[@]}.log
    "$PY" scripts/wheel_index.py "$@" >"$log" 2>&1 &
    SERVER_PIDS+=($!)
    for _ in $(seq 50); do
        URL=$(sed -n 's/^index: \([^ ]*\) .*/\1/p' "$log")
        [ -n "$URL" ] && return 0
        sleep 0.2
    done
    fail "the local wheel index did not start" "$log"
}
serve "$WH_CPU"
CPU_URL=$URL

# Can this engine run a container at all, and reach the index over the host's network (what the
# builds' RUN steps do)? If not, that is the machine, not the project.
docker run --rm --network host "$BASE" python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + 'torch/', timeout=30)" \
    "$CPU_URL" >"$LOG/preflight.log" 2>&1 \
    || skip "this engine cannot run a container that reaches $CPU_URL with --network host ($(tail -n 1 "$LOG/preflight.log"))"

# --------------------------------------------------------------------------- 5. CPU image
build() {  # build <tag> <Dockerfile> <builder: buildkit|legacy> <index url> [extra build args...]
    local tag=$1 file=$2 builder=$3 url=$4 cli t0
    shift 4
    BUILT+=("$tag")
    if [ "$builder" = buildkit ]; then cli=$BUILDKIT_CLI; export DOCKER_BUILDKIT=1; else cli=docker; export DOCKER_BUILDKIT=0; fi
    t0=$SECONDS
    timeout 2400 "$cli" build --network host --build-arg BASE_IMAGE="$BASE" --build-arg PIP_INDEX_URL="$url" \
        "$@" -f "$file" -t "$tag" . >"$LOG/build-$builder-${tag//[:\/]/_}.log" 2>&1 \
        || fail "docker build of $file with the $builder builder failed" "$LOG/build-$builder-${tag//[:\/]/_}.log"
    unset DOCKER_BUILDKIT
    note "built $tag from $file with $builder in $((SECONDS - t0)) s: $(mb "$tag")"
}

need_space "$NEED_CPU_GB" "the CPU image (build and runs)"
if [ -n "$BUILDKIT_CLI" ]; then
    build pfbench:cpu docker/Dockerfile buildkit "$CPU_URL" --build-arg PIP_EXTRA_INDEX_URL=
    build pfbench:cpu-legacy docker/Dockerfile legacy "$CPU_URL" --build-arg PIP_EXTRA_INDEX_URL=
else
    note "SKIPPED: the BuildKit build (no buildx plugin, and no Docker client older than 23 with BuildKit built in)"
    build pfbench:cpu docker/Dockerfile legacy "$CPU_URL" --build-arg PIP_EXTRA_INDEX_URL=
fi

# The runs: a uid that is not the image's 1000 (nor root), owning a fresh output directory.
if [ "$(id -u)" = 0 ]; then RUN_AS=4321:4321; else RUN_AS=$(id -u):$(id -g); fi
OUT=$LOG/out
mkdir -p "$OUT" && chown "$RUN_AS" "$OUT"
drun() { timeout 1200 docker run --rm --init --user "$RUN_AS" -v "$OUT:/outputs" "$@"; }

for tool in pytest ruff hadolint; do
    docker run --rm --entrypoint sh pfbench:cpu -c "! command -v $tool" >/dev/null \
        || fail "the runtime image ships $tool (test and lint tools stay in the build stage)"
done

t0=$SECONDS
drun pfbench:cpu -m +experiment=smoke hydra/launcher=local_pool hydra.sweep.dir=/outputs/smoke \
    >"$LOG/smoke.log" 2>&1 || fail "the smoke sweep failed in pfbench:cpu" "$LOG/smoke.log"
jobs=$(sed -n 's/.*pfbench sweep: \([0-9]*\)\/\1 jobs finished.*/\1/p' "$LOG/smoke.log" | tail -n 1)
written=$(find "$OUT/smoke" -name metrics.json | wc -l)
[ -n "$jobs" ] && [ "$jobs" = "$written" ] \
    || fail "smoke sweep: ${jobs:-?} jobs reported finished, $written metrics.json written" "$LOG/smoke.log"
note "smoke sweep in pfbench:cpu: $jobs jobs, $jobs metrics.json, $((SECONDS - t0)) s"

drun --entrypoint pfbench-report pfbench:cpu /outputs/smoke >"$LOG/report.log" 2>&1 \
    || fail "pfbench-report failed in pfbench:cpu" "$LOG/report.log"
[ -s "$OUT/smoke/report/report.md" ] || fail "pfbench-report wrote no report/report.md" "$LOG/report.log"
note "report of the smoke sweep in pfbench:cpu: $(find "$OUT/smoke/report" -type f | wc -l) files"

t0=$SECONDS
drun pfbench:cpu >"$LOG/main.log" 2>&1 || fail "the main job (the image's default command) failed" "$LOG/main.log"
main=$(find "$OUT/outputs" -name metrics.json | head -n 1)
[ -n "$main" ] || fail "the main job wrote no metrics.json" "$LOG/main.log"
note "main job (default command, +model=wgan) in pfbench:cpu: $((SECONDS - t0)) s"
t0=$SECONDS
WANDB_MODE=offline "$PY" -m pfbench.train +model=wgan progress=false hydra.run.dir="$LOG/host-main" \
    >"$LOG/host-main.log" 2>&1 || fail "the main job failed on the host" "$LOG/host-main.log"
"$PY" - "$main" "$LOG/host-main/metrics.json" <<'EOF' >"$LOG/compare.log" 2>&1 || fail "the image's main job and the host's differ" "$LOG/compare.log"
import json, math, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
bad, seen = [], [0]
def walk(x, y, key):
    if key == "timing":  # durations differ run to run; every other value must agree
        return
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            walk(x.get(k), y.get(k), f"{key}.{k}" if key else k)
    elif isinstance(x, float) and isinstance(y, float):
        seen[0] += 1
        if not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) and not (math.isnan(x) and math.isnan(y)):
            bad.append(f"{key}: image {x!r}, host {y!r}")
    elif x != y and not (isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isclose(x, y)):
        bad.append(f"{key}: image {x!r}, host {y!r}")
walk(a, b, "")
print("\n".join(bad[:20]) or f"{seen[0]} floating-point values agree")
sys.exit(1 if bad else 0)
EOF
note "main job: metrics.json equal to a host run of the same command: $(tail -n 1 "$LOG/compare.log") (rel. 1e-6; host run $((SECONDS - t0)) s)"

foreign=$(find "$OUT" -mindepth 1 ! -uid "${RUN_AS%%:*}" | head -n 3)
[ -z "$foreign" ] || fail "files in the output volume not owned by the run's uid ${RUN_AS%%:*}: $foreign"
note "every file written to the volume belongs to uid ${RUN_AS%%:*} (the --user of the runs)"

if docker image inspect pfbench:cpu-legacy >/dev/null 2>&1; then
    drun pfbench:cpu-legacy +model=wgan model.train.steps=50 eval=fast logger=none progress=false \
        hydra.run.dir=/outputs/legacy >"$LOG/legacy.log" 2>&1 || fail "a run in pfbench:cpu-legacy failed" "$LOG/legacy.log"
    [ -s "$OUT/legacy/metrics.json" ] || fail "the run in pfbench:cpu-legacy wrote no metrics.json" "$LOG/legacy.log"
    note "pfbench:cpu-legacy: a short run wrote metrics.json"
    docker image rm pfbench:cpu-legacy >/dev/null 2>&1  # done with it: its ~4 GB of layers go now
fi

# Without --user, on a directory the image's uid 1000 cannot write: one line naming the fix, exit 2.
mkdir -p "$LOG/not-writable" && chmod 755 "$LOG/not-writable"
if [ "$(stat -c %u "$LOG/not-writable")" != 1000 ]; then
    timeout 300 docker run --rm --init -v "$LOG/not-writable:/outputs" pfbench:cpu logger=none >"$LOG/not-writable.log" 2>&1
    rc=$?
    { [ "$rc" = 2 ] && [ "$(grep -c . "$LOG/not-writable.log")" = 1 ] && grep -q -- "--user" "$LOG/not-writable.log"; } \
        || fail "an unwritable /outputs gave exit $rc and not one line naming --user" "$LOG/not-writable.log"
    note "an unwritable /outputs without --user: exit 2, one line: $(cut -c1-110 "$LOG/not-writable.log")..."
fi

# --------------------------------------------------------------------------- 6. CUDA image
if [ "${PFBENCH_DOCKER_CUDA:-1}" = 0 ]; then
    note "SKIPPED: the CUDA image (PFBENCH_DOCKER_CUDA=0)"
    finish
    exit 0
fi
VISION=$(grep -o '"torchvision==[^"]*"' pyproject.toml | tr -d '"' | head -n 1)
WH_CUDA=$CACHE/wheels-cuda
mkdir -p "$WH_CUDA"
t0=$SECONDS
# PyPI's default torch wheel is the CUDA build: ask that index only (no find-links, no CPU index).
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
    "$PY" -m pip download --no-deps --only-binary=:all: -q -d "$WH_CUDA" \
    --index-url "${PFBENCH_CUDA_INDEX_URL:-https://pypi.org/simple}" \
    "torch==$TORCH" "$VISION" -r docker/requirements-cuda.lock >"$LOG/wheels-cuda.log" 2>&1 \
    || skip "the CUDA image was NOT built: the host's pip could not fetch PyPI's CUDA torch wheels ($(tail -n 1 "$LOG/wheels-cuda.log"))"
ls "$WH_CUDA"/torch-"$TORCH"-*.whl >/dev/null 2>&1 \
    || skip "the CUDA image was NOT built: no torch-$TORCH (CUDA) wheel came from ${PFBENCH_CUDA_INDEX_URL:-https://pypi.org/simple}"
note "CUDA wheels: $(du -sh "$WH_CUDA" | cut -f1) in $WH_CUDA ($((SECONDS - t0)) s)"
need_space "$NEED_CUDA_GB" "the CUDA image"
serve "$WH_CUDA" "$WH_CPU" --exclude "torch-*+cpu-*"
if [ -n "$BUILDKIT_CLI" ]; then cuda_builder=buildkit; else cuda_builder=legacy; fi
build pfbench:cuda docker/Dockerfile.cuda "$cuda_builder" "$URL"
docker run --rm --entrypoint python pfbench:cuda -c "import torch, torchvision, pfbench.train
assert torch.version.cuda, torch.__version__
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'torchvision', torchvision.__version__, 'GPU visible:', torch.cuda.is_available())" \
    >"$LOG/cuda-import.log" 2>&1 || fail "torch/torchvision/pfbench do not import in pfbench:cuda" "$LOG/cuda-import.log"
note "pfbench:cuda imports: $(cat "$LOG/cuda-import.log")"
drun pfbench:cuda +model=wgan model.train.steps=50 eval=fast logger=none progress=false device=cpu \
    hydra.run.dir=/outputs/cuda-cpu >"$LOG/cuda-run.log" 2>&1 || fail "a CPU run in pfbench:cuda failed" "$LOG/cuda-run.log"
[ -s "$OUT/cuda-cpu/metrics.json" ] || fail "the run in pfbench:cuda wrote no metrics.json" "$LOG/cuda-run.log"
note "pfbench:cuda: a short device=cpu run wrote metrics.json; device=cuda needs a GPU and was NOT run here"
finish
