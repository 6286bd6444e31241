#!/usr/bin/env bash
# Train with N processes on this machine under torchrun (no Ray).
#   launch/torchrun.sh NPROC CONFIG [tengine train args...]
#   launch/torchrun.sh 2 configs/quickstart.yaml --set distributed.backend=fsdp
# Each process runs `tengine train` in-process (never Ray, whatever distributed.workers says);
# the backend (ddp, fsdp or deepspeed) joins the process group that
# torchrun describes in RANK/WORLD_SIZE/MASTER_ADDR (gloo on CPU, NCCL on GPUs).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 NPROC CONFIG [tengine train args...]" >&2
  exit 2
fi
nproc=$1; shift
here=$(cd "$(dirname "$0")/.." && pwd)
torchrun_bin=${TORCHRUN:-$( [ -x "$here/.venv/bin/torchrun" ] && echo "$here/.venv/bin/torchrun" || echo torchrun )}
exec "$torchrun_bin" --standalone --nproc_per_node "$nproc" -m tengine train "$@"
