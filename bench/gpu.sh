#!/usr/bin/env bash
# rnnserve on CUDA, measured: one prepared run for a bare GPU box (issue 17).
#
#   bench/gpu.sh --prepare         here, where torch is installed: export the test and bench
#                                  models into bench/out/gpu-models/ (the GPU box needs no torch)
#   bench/gpu.sh                   on the GPU box: venv with the [gpu] extra, nvidia-smi, the
#                                  providers onnxruntime sees, the end-to-end tests with
#                                  CUDAExecutionProvider required, the bench's predict,
#                                  WebSocket and mux scenarios next to the hand-tuned baseline
#                                  on the same GPU, IOBinding vs session.run; a results table
#   GPU_SH_ALLOW_CPU=1 bench/gpu.sh   the same flow on a CPU host (a dry run: CPU provider)
#
# Wheels: from PyPI, or only from a `.whl/` folder at the repository root when it holds any
# (pip --no-index). The venv (GPU_SH_VENV, default .venv-gpu) sees the system's packages, so an
# onnxruntime-gpu already installed there is used as it is. Results: $GPU_SH_OUT, else $OUT
# (the device tool's folder), else bench/out/gpu: results.md, and every step's log.
# Each phase has its own time limit; the whole run is meant to take under ~8 minutes.
# With the device tool: `bench/gpu.sh --prepare` here first, then run it there with
# carry=["bench/out/gpu-models"] (bench/out/ is ignored by git, so it travels only if carried),
# and a .whl/ folder carried too when that machine cannot reach the package index.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PREPARED=bench/out/gpu-models
CUDA=CUDAExecutionProvider
CPU=CPUExecutionProvider
SCENARIOS_WANTED=(predict_c1 predict_c32 streams64_ws streams1024_ws ort_ceiling mux_256 mux_4096)
E2E_TESTS=(
    tests/e2e/test_providers.py
    tests/e2e/test_serve.py
    tests/e2e/test_streaming.py
    tests/e2e/test_shutdown.py
    tests/e2e/test_tritonclient.py
)

say() { printf '[gpu.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [[ "${1:-}" == "--prepare" ]]; then
    python=${GPU_SH_PREPARE_PYTHON:-.venv/bin/python}
    rm -rf "$PREPARED" && mkdir -p "$PREPARED"
    env -u RNNSERVE_TEST_REPOSITORY -u BENCH_MODEL_REPOSITORY "$python" - "$PREPARED" <<'EOF'
import sys
from pathlib import Path

from bench.model import export_bench_model
from tests.support.models import export_random_repository

out = Path(sys.argv[1])
export_random_repository(out / "random")
export_bench_model(out / "bench")
print(f"exported into {out}: {sorted(p.name for p in (out / 'random').iterdir())} and bench-rnn")
EOF
    exit $?
fi

OUT_DIR=${GPU_SH_OUT:-${OUT:-bench/out/gpu}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
VENV=${GPU_SH_VENV:-.venv-gpu}
ALLOW_CPU=${GPU_SH_ALLOW_CPU:-0}
STARTED=$(date +%s)
RESULTS="$OUT_DIR/results.md"

if [[ ! -d "$PREPARED/random" || ! -d "$PREPARED/bench" ]]; then
    say "missing $PREPARED: run 'bench/gpu.sh --prepare' where torch is installed, and bring it along"
    exit 2
fi

# 1. the GPU and its driver
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi >"$OUT_DIR/nvidia-smi.txt" 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        >"$OUT_DIR/gpu.txt" 2>&1
    cat "$OUT_DIR/nvidia-smi.txt"
else
    echo "no nvidia-smi on PATH" | tee "$OUT_DIR/nvidia-smi.txt" >"$OUT_DIR/gpu.txt"
    [[ "$ALLOW_CPU" == 1 ]] || { say "no NVIDIA driver here (GPU_SH_ALLOW_CPU=1 for a dry run)"; exit 1; }
fi

# 2. the venv: the serving dependencies with onnxruntime-gpu (CPU wheel in a dry run), and what
#    the tests and the bench need; never torch
RUNTIME=gpu
[[ "$ALLOW_CPU" == 1 ]] && ! command -v nvidia-smi >/dev/null 2>&1 && RUNTIME=cpu
py=${GPU_SH_PYTHON:-python3}
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV with $($py --version 2>&1)"
    "$py" -m venv --system-site-packages "$VENV" || {
        say "cannot create a venv with $py (Debian: apt-get install python3-venv; or GPU_SH_PYTHON=...)"
        exit 1
    }
fi
VPY="$ROOT/$VENV/bin/python"
[[ "$VENV" == /* ]] && VPY="$VENV/bin/python"
# onnxruntime-gpu >= 1.27 is built for CUDA 13 (driver >= 580); an older driver gets the last
# CUDA 12 wheel (docs/deploy.md). GPU_SH_ORT_VERSION pins any version.
ORT_VERSION=${GPU_SH_ORT_VERSION:-}
if [[ -z "$ORT_VERSION" && "$RUNTIME" == gpu ]]; then
    driver=$(cut -d, -f2 "$OUT_DIR/gpu.txt" | head -1 | tr -d ' ')
    if [[ "${driver%%.*}" =~ ^[0-9]+$ ]] && (( ${driver%%.*} < 580 )); then
        ORT_VERSION=1.26.0
        say "driver $driver is older than 580 (CUDA 13): onnxruntime-gpu $ORT_VERSION (CUDA 12)"
    fi
fi
{
    "$VPY" deploy/requirements.py lines --runtime "$RUNTIME" --extra redis --extra grpc \
        ${ORT_VERSION:+--onnxruntime-version "$ORT_VERSION"}
    printf '%s\n' "pytest>=8" "pytest-asyncio>=0.23" "httpx>=0.27" "websockets>=12" "tritonclient[http]>=2.40"
} >"$OUT_DIR/requirements.txt"
pip_args=(--disable-pip-version-check --progress-bar off -q -r "$OUT_DIR/requirements.txt")
if compgen -G ".whl/*.whl" >/dev/null; then
    say "installing from .whl/ only ($(ls .whl/*.whl | wc -l) wheels)"
    pip_args=(--no-index --find-links .whl "${pip_args[@]}")
else
    say "installing from the package index"
fi
if ! timeout 300 "$VPY" -m pip install "${pip_args[@]}" >"$OUT_DIR/pip.log" 2>&1; then
    say "pip install failed:"; tail -20 "$OUT_DIR/pip.log" >&2; exit 1
fi
"$VPY" deploy/requirements.py check --runtime "$RUNTIME" 2>&1 | tee "$OUT_DIR/requirements-check.txt"
say "venv ready after $(( $(date +%s) - STARTED )) s"

# 3. what onnxruntime sees
"$VPY" - >"$OUT_DIR/providers.txt" 2>&1 <<'EOF'
import onnxruntime as ort

if hasattr(ort, "preload_dlls"):
    try:
        ort.preload_dlls()
    except Exception as exc:  # a CPU wheel, or missing CUDA libraries: say so, go on
        print(f"preload_dlls: {exc}")
print(f"onnxruntime {ort.__version__} ({ort.get_device()}): {', '.join(ort.get_available_providers())}")
EOF
cat "$OUT_DIR/providers.txt"
if grep -q "$CUDA" "$OUT_DIR/providers.txt"; then
    PROVIDER=$CUDA
elif [[ "$ALLOW_CPU" == 1 ]]; then
    PROVIDER=$CPU
    say "dry run: no CUDA provider, everything runs on the CPU"
else
    say "onnxruntime offers no $CUDA here"; exit 1
fi
PROVIDERS="$PROVIDER,$CPU"
[[ "$PROVIDER" == "$CPU" ]] && PROVIDERS=$CPU

# 4. end-to-end tests, every server they start required to run on $PROVIDER; the replica and
#    mux tests too when a Redis answers on 127.0.0.1:6379 (as on the development host)
if "$VPY" -c "import redis; redis.Redis(socket_timeout=1).ping()" >/dev/null 2>&1; then
    E2E_TESTS+=(tests/e2e/test_redis_replicas.py tests/e2e/test_mux_replicas.py)
fi
say "e2e tests on $PROVIDER: ${E2E_TESTS[*]}"
PYTHONPATH="$ROOT/clients/python${PYTHONPATH:+:$PYTHONPATH}" \
RNNSERVE_TEST_REPOSITORY="$ROOT/$PREPARED/random" \
TEST_SERVER_PROVIDERS="$PROVIDERS" TEST_SERVER_REQUIRE_PROVIDER="$PROVIDER" \
    timeout 240 "$VPY" -m pytest -q -p no:cacheprovider "${E2E_TESTS[@]}" \
    >"$OUT_DIR/e2e.log" 2>&1
E2E_STATUS=$?
E2E_SUMMARY=$(tail -1 "$OUT_DIR/e2e.log")
say "e2e: $E2E_SUMMARY (exit $E2E_STATUS)"

# 5. IOBinding vs session.run on this device
say "IOBinding vs session.run"
BENCH_MODEL_REPOSITORY="$ROOT/$PREPARED/bench" timeout 90 "$VPY" -m bench.iobinding \
    --provider "$PROVIDER" --seconds 1 >"$OUT_DIR/iobinding.md" 2>"$OUT_DIR/iobinding.log"
IOB_STATUS=$?

# 6. the bench: rnnserve and the hand-tuned baseline, both on $PROVIDER, same scenarios
KNOWN=$("$VPY" -c "from bench.report import SCENARIOS; print(' '.join(SCENARIOS))")
ONLY=()
for id in "${SCENARIOS_WANTED[@]}"; do
    [[ " $KNOWN " == *" $id "* ]] && ONLY+=("$id") || say "the bench has no scenario $id: skipped"
done
say "bench: ${ONLY[*]}"
BENCH_PROVIDERS="$PROVIDERS" BENCH_REQUIRE_PROVIDER="$PROVIDER" \
BENCH_MODEL_REPOSITORY="$ROOT/$PREPARED/bench" \
    timeout 330 "$VPY" -m bench --only "${ONLY[@]}" --out "$OUT_DIR/bench" \
    >"$OUT_DIR/bench.log" 2>&1
BENCH_STATUS=$?
say "bench exit $BENCH_STATUS"

# 7. one results file
{
    echo "# bench/gpu.sh on $(cat "$OUT_DIR/gpu.txt")"
    echo
    echo "- $(cat "$OUT_DIR/providers.txt" | tail -1); models and baseline on **$PROVIDER**"
    echo "- e2e (${#E2E_TESTS[@]} files, servers required on $PROVIDER): $E2E_SUMMARY (exit $E2E_STATUS)"
    echo "- bench exit $BENCH_STATUS, IOBinding exit $IOB_STATUS; wall time $(( $(date +%s) - STARTED )) s"
    echo
    echo "## Bench (rnnserve next to the hand-tuned baseline, same device)"
    echo
    if [[ -f "$OUT_DIR/bench/results.md" ]]; then
        sed -n '/^| scenario/,/^$/p' "$OUT_DIR/bench/results.md"
    else
        echo "no bench table; see bench.log:"; echo '```'; tail -15 "$OUT_DIR/bench.log"; echo '```'
    fi
    echo
    echo "## IOBinding vs session.run"
    echo
    cat "$OUT_DIR/iobinding.md"
} >"$RESULTS"
cat "$RESULTS"
say "wrote $RESULTS in $(( $(date +%s) - STARTED )) s"
[[ $E2E_STATUS == 0 && $BENCH_STATUS == 0 && $IOB_STATUS == 0 ]]
