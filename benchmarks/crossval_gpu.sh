#!/usr/bin/env bash
# The 6-fold nested cross-validation of `main.py crossval`, its folds run side by side on
# one GPU under the JAX backend: fold k tests on block k, selects on block k+1 (the first
# block for the last fold) and trains on the other four. Each fold is one `main.py all`
# run (train, choose checkpoint, TTA, thresholds and cell parameters on the selection
# block, score the test block once). Writes OUT/folds.tgz with each fold's JSON results and
# history (default OUT: logs/crossval-gpu-out).
#
# Usage: bash benchmarks/crossval_gpu.sh [MINUTES] [STEPS_PER_EPOCH] [WORKERS] [TARGET] [MONITOR]
# MONITOR (val_loss, val_v_rand or val_v_info) picks each fold's checkpoint on its selection block.
set -euo pipefail
minutes=${1:-4}
steps=${2:-500}
workers=${3:-2}
target=${4:-membrane}
monitor=${5:-val_loss}
name="cv-$target-$monitor"
out=${OUT:-logs/crossval-gpu-out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
blocks=("0,1,2,3,4" "5,6,7,8,9" "10,11,12,13,14" "15,16,17,18,19" "20,21,22,23,24" "25,26,27,28,29")
pids=()
for k in 0 1 2 3 4 5; do
    select=${blocks[$(((k + 1) % 6))]}
    python3 main.py all --source data/membrane --recipe cpu --precision float32 --epochs 1000 \
        --steps-per-epoch "$steps" --time-limit "$minutes" --seed 1 --workers "$workers" --target "$target" --monitor "$monitor" \
        --val-ids "$select" --test-ids "${blocks[$k]}" --run "$name-fold$((k + 1))" --logs logs --quiet \
        >"$out/fold$((k + 1)).log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
tar czf "$out/folds.tgz" logs/"$name"-fold*/{summary.json,history.csv,selection_scores.json,test_scores.json,instance_parameters.json} "$out"/fold*.log 2>/dev/null || true
tail -n 4 "$out"/fold*.log
exit $status
