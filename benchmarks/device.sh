#!/usr/bin/env bash
# The accelerator benchmarks on ONE GPU, within 5 minutes: the speed benchmark's networks of real
# size (batch 8; then gradients and batches 1 and 64 while a $SPEED_BUDGET of 140 s lasts) and
# the NHWC/NCHW conv stack, and the generation benchmark, each writing a JSON record that names
# the device it ran on.
#
#   bash benchmarks/device.sh                    # on the GPU machine, from the repository root
#   bash benchmarks/device.sh --quick            # CPU smoke run (tiny networks): tens of seconds
#   bash benchmarks/device.sh --out-dir DIR      # records to DIR (default benchmarks/results,
#                                                # or $ERSDE_RESULTS_DIR)
#
# Writes DIR/speed_gpu.json and DIR/generate_gpu.json (speed_gpu_quick.json and
# generate_gpu_quick.json with --quick). Runs the repository from source (PYTHONPATH=.) with the
# machine's python3 ($PYTHON to override) and installs nothing. Without --quick it refuses to run
# when JAX sees no GPU, so CPU numbers never land in a *_gpu.json. Each section runs under its own
# time limit ($SPEED_LIMIT, $GENERATE_LIMIT seconds: 195 and 90); a section that fails or
# overruns is reported, the next one still runs, and the script exits non-zero. speed.py saves
# its record after each network, so an overrun keeps the networks already measured.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=""
out_dir="${ERSDE_RESULTS_DIR:-benchmarks/results}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --out-dir)
      [[ $# -ge 2 ]] || { echo "device.sh: --out-dir needs a folder" >&2; exit 2; }
      out_dir="$2"
      shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device.sh: unknown argument $1 (use --quick, --out-dir DIR)" >&2; exit 2 ;;
  esac
  shift
done

python="${PYTHON:-python3}"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # allocate as needed: memory is measured, not grabbed
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"

if [[ -n "$quick" ]]; then
  suffix="_quick"
  speed_args=(--quick --sections networks,layout)  # small network: tests/test_benchmarks.py
  speed_limit=900
  generate_limit=900
else
  suffix=""
  speed_args=(--sections networks,layout --budget "${SPEED_BUDGET:-140}")
  speed_limit="${SPEED_LIMIT:-195}"
  generate_limit="${GENERATE_LIMIT:-90}"
fi
# One JAX start-up: prints the devices; without --quick, exits 3 unless JAX's backend is a GPU.
"$python" - "$quick" <<'EOF' || { echo "device.sh: JAX sees no GPU: run it on the GPU machine," \
                                      "or with --quick for a CPU smoke run" >&2; exit 2; }
import sys
import jax
print(f"== device: jax {jax.__version__}, {jax.default_backend()}: {jax.devices()}")
sys.exit(0 if sys.argv[1] or jax.default_backend() == "gpu" else 3)
EOF
mkdir -p "$out_dir"
speed_out="$out_dir/speed_gpu$suffix.json"
generate_out="$out_dir/generate_gpu$suffix.json"

status=0
# section NAME LIMIT_SECONDS COMMAND...: runs COMMAND under a time limit and reports the outcome.
section() {
  local name="$1" limit="$2" start=$SECONDS rc=0
  shift 2
  echo "== $name: $* (limit ${limit} s)"
  timeout --kill-after=15 "$limit" "$@" || rc=$?
  if [[ $rc -eq 0 ]]; then
    echo "== $name: done in $((SECONDS - start)) s"
  else
    echo "== $name: FAILED (exit $rc$([[ $rc -eq 124 ]] && echo ', time limit')) after" \
         "$((SECONDS - start)) s" >&2
    status=1
  fi
}

section speed "$speed_limit" "$python" benchmarks/speed.py ${speed_args[@]+"${speed_args[@]}"} \
  --out "$speed_out"
if [[ -f benchmarks/generate.py ]]; then
  section generate "$generate_limit" "$python" benchmarks/generate.py --out "$generate_out" $quick
else
  echo "== generate: benchmarks/generate.py does not exist yet; skipped"
fi

for record in "$speed_out" "$generate_out"; do
  if [[ -f "$record" ]]; then
    "$python" - "$record" <<'EOF'
import json, sys
record = json.load(open(sys.argv[1]))
device = record.get("device") or record.get("networks_run", {}).get("device")
print(f"== {sys.argv[1]}: device {device}, date {record.get('date')}")
EOF
  fi
done
echo "== total $SECONDS s"
exit $status
