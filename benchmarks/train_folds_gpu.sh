#!/usr/bin/env bash
# The 6 folds of `main.py crossval --folds 6`, trained side by side on one GPU under the JAX
# backend and only trained: fold k trains on four blocks of 5 slices, lets the next block
# (the first for the last fold) choose its checkpoint and early stopping, and never sees its
# own test block. Scoring (TTA, thresholds, cells) runs afterwards on any machine:
# benchmarks/score_folds.py. Each fold's weights land in OUT/foldK.weights.h5 (network
# weights only, 8 MB at the `cpu` recipe's width), with logs and histories in OUT/runs.tgz.
#
# Usage: bash benchmarks/train_folds_gpu.sh [MINUTES] [SEED]   (defaults 6.5 and 3)
# Keras travels as wheels in .whl/ where the machine lacks it (TensorFlow is not needed).
set -uo pipefail
minutes=${1:-6.5}
seed=${2:-3}
out=${OUT:-logs/folds-gpu-out}
mkdir -p "$out" /tmp/fold-logs
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
blocks=("0,1,2,3,4" "5,6,7,8,9" "10,11,12,13,14" "15,16,17,18,19" "20,21,22,23,24" "25,26,27,28,29")
for k in 0 1 2 3 4 5; do
    python3 main.py train --data data/membrane --recipe cpu --precision float32 --time-limit "$minutes" \
        --seed "$seed" --workers 2 --val-ids "${blocks[$(((k + 1) % 6))]}" --test-ids "${blocks[$k]}" \
        --run "gpu-fold$((k + 1))" --logs logs --quiet >"/tmp/fold-logs/fold$((k + 1)).log" 2>&1 &
done
wait
python3 - "$out" <<'PY'
import sys, keras
for k in range(1, 7):
    model = keras.models.load_model(f"logs/gpu-fold{k}/unet_membrane.keras", compile=False)
    model.save_weights(f"{sys.argv[1]}/fold{k}.weights.h5")
PY
tail -qn 1 /tmp/fold-logs/fold*.log
tar czf "$out/runs.tgz" /tmp/fold-logs logs/gpu-fold*/{history.csv,run.json,curves.png} 2>/dev/null
