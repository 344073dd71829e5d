#!/usr/bin/env bash
# Longer training of the cpu recipe's network on a GPU, under the JAX backend: the membrane
# model and the affinity model side by side, same seed, same split (train 0-19, select 20-24,
# test 25-29 untouched), the selection slices choosing the checkpoint and early stopping.
# Copies the two models and their histories to OUT (default: logs/long-gpu-out).
#
# Usage: bash benchmarks/long_training_gpu.sh [MINUTES] [STEPS_PER_EPOCH] [WORKERS]
# Wheels in .whl/ (keras and what it needs beyond the machine's own packages) are
# installed first when present.
set -euo pipefail
minutes=${1:-6}
steps=${2:-500}
workers=${3:-6}
out=${OUT:-logs/long-gpu-out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
common=(--recipe cpu --precision float32 --epochs 1000 --steps-per-epoch "$steps" --time-limit "$minutes"
        --seed 1 --workers "$workers" --logs logs --quiet)
python3 main.py train --target membrane --run long-membrane "${common[@]}" >"$out/membrane.log" 2>&1 &
membrane=$!
python3 main.py train --target affinities --run long-affinities "${common[@]}" >"$out/affinities.log" 2>&1 &
affinities=$!
status=0
wait $membrane || status=$?
wait $affinities || status=$?
for target in membrane affinities; do
    cp "logs/long-$target/history.csv" "$out/$target-history.csv" 2>/dev/null || true
done
# The models without their optimizer state (a quarter of the size): enough to predict.
python3 -c '
import sys, keras, affinities, losses, model
for target in ("membrane", "affinities"):
    network = keras.saving.load_model(f"logs/long-{target}/unet_membrane.keras", compile=False)
    network.save(f"{sys.argv[1]}/{target}.keras")
' "$out" || status=$?
tail -n 3 "$out"/*.log
exit $status
