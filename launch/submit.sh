#!/usr/bin/env bash
# Submit a training job to a running Ray cluster (`ray job submit`), from the project root.
#   launch/submit.sh CONFIG [tengine train args...]
#   RAY_ADDRESS=http://head:8265 launch/submit.sh configs/quickstart.yaml --workers 8 --gpus-per-worker 1
# The project is uploaded as the job's working dir (minus .venv, runs and data); the cluster's
# Python must have tengine's dependencies installed (see cluster/). Runs land under
# TENGINE_STORAGE (default: ./runs, absolute), which must be storage every node sees.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 CONFIG [tengine train args...]" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ray_bin=${RAY_BIN:-$( [ -x .venv/bin/ray ] && echo .venv/bin/ray || echo ray )}
storage=${TENGINE_STORAGE:-$root/runs}
export RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}  # Ray ≥ 2.60 asks the CLI for the cluster's token

config=$1; shift
out=$("$ray_bin" job submit --no-wait --working-dir . \
  --runtime-env-json '{"excludes": [".venv", "runs", "data", ".git", "*.egg-info"]}' \
  -- python -m tengine train "$config" --address auto --set "logging.root=$storage" "$@" 2>&1) || {
  echo "$out" >&2
  exit 1
}
job=$(echo "$out" | grep -o "raysubmit_[A-Za-z0-9]*" | head -n 1)
echo "submitted: $job"
echo "follow:    $ray_bin job logs --follow $job"
echo "status:    $ray_bin job status $job"
echo "runs in:   $storage"
