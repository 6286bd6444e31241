#!/usr/bin/env bash
# Train on every CPU core / GPU of this machine with Ray Train workers (an embedded Ray).
#   launch/local.sh CONFIG [WORKERS] [tengine train args...]
#   launch/local.sh configs/quickstart.yaml 2 --set distributed.backend=fsdp
# WORKERS defaults to the GPU count, or 2 on a machine without GPUs.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 CONFIG [WORKERS] [tengine train args...]" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
tengine=${TENGINE:-$( [ -x "$root/.venv/bin/tengine" ] && echo "$root/.venv/bin/tengine" || echo tengine )}
config=$1; shift
gpus=$(command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | wc -l || echo 0)
workers=${1:-}
if [[ "$workers" =~ ^[0-9]+$ ]]; then shift; else workers=$(( gpus > 0 ? gpus : 2 )); fi
extra=()
[ "$gpus" -gt 0 ] && extra=(--gpus-per-worker 1)
exec "$tengine" train "$config" --workers "$workers" "${extra[@]}" "$@"
