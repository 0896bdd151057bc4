#!/usr/bin/env bash
# The GPU checks of one lent-GPU session, in one call (device time is scarce): the GPU rows of the
# benchmarks, crystal detector (issue 16) and U-Net quality out of recipe (17), then the CUDA
# tests; the feed-rate rows of issue 19 on request. Each step has its own time limit and its log
# goes to $OUT; a failing step does not stop the next. Run from the repository root:
#
#   bash benchmarks/gpu_checks.sh              # ~9.5 min; SCALE=0.5 halves every step's budget
#   CHECKS="feed_b16 feed_b64" bash benchmarks/gpu_checks.sh     # only these steps
#
# The steps run one after another: side by side (2026-11-28) they were bound by the 16 CPUs that
# render their data, and the detector trained at a third of its speed alone.
#
# Packages the GPU image (Python 3.12, torch with CUDA) lacks travel as cp312 wheels in .whl/:
# ray 2.60.0 (ray/jars, rllib, llm and dashboard/client taken out: 42 MB), jsonschema,
# jsonschema-specifications, referencing, rpds-py, pydantic 2.13.4 with pydantic-core 2.46.4,
# annotated-types, typing-inspection, typing-extensions, pywavelets, tensorboardx, fastapi,
# starlette, python-multipart, uvicorn, opentelemetry-api (fastapi 0.165 requires it).
set -u
OUT=${OUT:-/tmp/microforge-gpu}
SCALE=${SCALE:-1}
CHECKS=${CHECKS:-crystals unet pytest_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
secs() { python3 -c "print(int($1 * $SCALE))"; }
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, print the tail
    local name=$1 limit; limit=$(secs "$2"); shift 2
    case " $CHECKS " in *" $name "*) ;; *) return 0 ;; esac
    local started=$SECONDS
    timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "== $name: rc=$? in $((SECONDS - started)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/summary.txt"
python3 -c "import ray, torch, microforge; print('ray', ray.__version__, 'torch', torch.__version__,
torch.cuda.get_device_name(0))" 2>&1 | tee -a "$OUT/summary.txt"

# Quiet first: the feed benchmark's rates are the issue's target and must not share the machine.
step feed_b16 130 python3 benchmarks/feed_rate.py --gpu --option preset=small --option image_size=256 \
    --precision bf16-mixed --batch-size 16 --data-workers 4 8 14 --feeds ${FEEDS:-prefetch per-epoch} --epochs 3 --steps 40
step feed_b64 60 python3 benchmarks/feed_rate.py --gpu --option preset=small --option image_size=256 \
    --precision bf16-mixed --batch-size 64 --data-workers 14 --feeds prefetch --epochs 3 --steps 20
step pytest_feed 50 python3 -m pytest -p no:cacheprovider -m gpu -q tests/trainers/test_feed.py

# Then the quality runs (their figures are quality, not speed) and the CUDA tests.
step crystals 270 python3 benchmarks/crystal_detector.py --gpus-per-worker 1 --preset small --size 384 \
    --minutes "$(python3 -c "print(3 * $SCALE)")" --epochs 8 --train-samples 1024 --batch-size 16 \
    --test-images 100 --threads 16 --out "$OUT/crystals.json"
step unet 200 python3 benchmarks/unet_quality.py --preset small --size 256 --gpus-per-worker 1 \
    --minutes "$(python3 -c "print(2 * $SCALE)")" --batch-size 16 --train-samples 2048
step pytest_gpu 100 python3 -m pytest -p no:cacheprovider -m gpu -x -q tests/tune/test_batch_search.py tests/tune/test_hardware_search.py
for f in feed_b16 feed_b64 pytest_feed crystals unet pytest_gpu; do
    [ -f "$OUT/$f.log" ] && { echo "---- $f"; grep -v "PlacementGroupCleaner\|streaming_executor" "$OUT/$f.log" | tail -n 25; }
done
cat "$OUT/summary.txt"
