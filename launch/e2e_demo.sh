#!/usr/bin/env bash
# The production loop end to end, on the embedded default (no cluster): train v1 on 2 Ray Train
# workers → register → alias production → export bundle with parity → drift report on shifted
# data (an alert to a local webhook) → the trigger submits a retrain → v2 registered →
# evaluated against v1 on the new data → production moved only if v2 is better. Ends with the
# registry's lineage and the runs comparison. A few minutes on a 2-core CPU.
#   launch/e2e_demo.sh                    # everything under runs/e2e (replaced each time)
#   E2E_DIR=/tmp/e2e launch/e2e_demo.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=$( [ -x "$root/.venv/bin/tengine" ] && echo "$root/.venv/bin" || dirname "$(command -v tengine)")
tengine="$bin/tengine"
py="$bin/python"
work=${E2E_DIR:-$root/runs/e2e}
rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)
# one store for the control plane and the experiment DB: the runs root's default
store="sqlite:///$work/runs/control/tengine.db"
at=(--store "$store")
# the quickstart, shorter: a tiny GPT on an order-2 Markov source (seed 1234)
config=configs/quickstart.yaml
sets=(--set "logging.root=$work/runs" --set training.max_steps=240
      --set training.eval_every_n_steps=80 --set checkpoint.every_n_steps=80
      --set data.seq_len=64 --set data.markov.num_tokens=240000)
shifted=(--set data.markov.seed=99)  # new data: the same symbols from another source
started=$(date +%s)
step() { printf '\n== [%3ds] %s\n' "$(( $(date +%s) - started ))" "$*"; }
job_id() { "$py" -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }

step "1. train v1 on 2 Ray Train workers (a train job, run here by 'tengine jobs work')"
v1_job=$("$tengine" jobs submit "$config" "${sets[@]}" --set name=v1 --workers 2 --register demo "${at[@]}" --json | job_id)
"$tengine" jobs work --once "${at[@]}"
"$tengine" jobs wait "$v1_job" "${at[@]}" --timeout 60 >/dev/null

step "2. the registry: demo v1, alias production"
"$tengine" registry promote demo 1 --by e2e-demo --reason "the first model" "${at[@]}"

step "3. export bundle with parity (safetensors + ONNX), attached to demo v1"
"$tengine" export --model demo:production --register demo:1 --formats safetensors,onnx \
    --latency-iters 5 --out "$work/bundles/demo-v1" "${at[@]}"

step "4. a retraining trigger: the balanced preset (drift 0.15, performance 5 %, 168 h, volume 20 %)"
# (the retrain trains in the job's own process: one model, no second Ray start-up)
"$tengine" triggers add demo-balanced --model demo --preset balanced --config "$config" \
    "${sets[@]}" --set name=v2 --set distributed.workers=0 --set distributed.backend=single \
    --set training.micro_batch_size=32 "${shifted[@]}" "${at[@]}"

step "5. a local webhook receiver for alerts (HMAC-signed)"
export E2E_HOOK_SECRET=$("$py" -c 'import secrets; print(secrets.token_hex(16))')
"$py" launch/webhook_receiver.py --port-file "$work/hook.port" --log "$work/webhook.jsonl" \
    --secret-env E2E_HOOK_SECRET &
receiver=$!
trap 'kill $receiver 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$work/hook.port" ] && break; sleep 0.1; done
hook="http://127.0.0.1:$(cat "$work/hook.port")/tengine-alerts"

step "6. drift: demo:production against the shifted data; the report goes to the control plane"
"$tengine" drift --reference demo:production --current "$config" \
    --set data.markov.num_tokens=240000 "${shifted[@]}" --webhook "$hook" \
    --webhook-secret-env E2E_HOOK_SECRET --out "$work/drift" \
    --alert-state "$work/drift/alert_state.json" --submit "${at[@]}"
"$tengine" triggers explain demo-balanced "${at[@]}"

step "7. the trigger's retrain job: v2 trained on the new data (in the job's process), registered, evaluated against v1"
"$tengine" jobs list --type retrain "${at[@]}"
"$tengine" jobs work --once "${at[@]}"

step "8. the promotion decision (both versions on the same held-out data)"
"$tengine" registry promotions demo "${at[@]}"
"$tengine" registry list demo "${at[@]}"

step "9. lineage of production, and the two runs compared"
"$tengine" registry lineage demo production "${at[@]}"
"$tengine" runs compare v1 v2 "${at[@]}"
step "done: $work (drift.png under drift/, the webhook's log in webhook.jsonl)"
