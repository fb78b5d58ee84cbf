#!/usr/bin/env bash
# Training throughput on a CUDA GPU: the blog tutorial's recipe, train.py's pipeline and the
# in-memory ceiling, on a synthetic JPEG split of flower_photos' size and photo sizes (the real
# photos cannot travel to a rented GPU machine). Needs only python3 with torch, torchvision,
# pillow, numpy, tqdm and matplotlib; about 5 minutes on an H100-class GPU. Then the JPEG cache
# against the raw one (bench/cache_speed.py): nvJPEG decoding and an epoch from each.
#
#   bench/gpu.sh                          # PHOTOS=3094 STEPS=200 BATCH=32, WORKERS as train.py's
#   PHOTOS=20 STEPS=1 BATCH=2 WORKERS=0 DEVICE=cpu bench/gpu.sh     # a dry run of the same steps
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-200}
# 10 untimed steps first, but never more than the timed ones: a dry run stays short
WARMUP=${WARMUP:-$(( STEPS < 10 ? STEPS : 10 ))}
if [ -z "${DATA:-}" ]; then
    DATA=$(mktemp -d)
    trap 'rm -rf "$DATA"' EXIT
fi
"$PYTHON" bench/make_photo_set.py --out "$DATA" --photos "${PHOTOS:-3094}"
"$PYTHON" bench/train_speed.py --data "$DATA" --device "${DEVICE:-cuda}" --steps "$STEPS" --warmup "$WARMUP" \
    --batch-size "${BATCH:-32}" ${WORKERS:+--workers "$WORKERS"}
# The JPEG cache against the raw one: size, build, nvJPEG decoding, one epoch from each.
"$PYTHON" bench/cache_speed.py --data "$DATA" --device "${DEVICE:-cuda}" ${WORKERS:+--workers "$WORKERS"}
