#!/usr/bin/env bash
# Training throughput on a CUDA GPU: the seed's recipe, train.py's pipeline and the in-memory
# ceiling, on a synthetic JPEG split of flower_photos' size and photo sizes (the real photos
# cannot travel to a rented GPU machine). Needs only python3 with torch, torchvision, pillow,
# numpy, tqdm and matplotlib; about 5 minutes on an H100-class GPU.
#
#   bench/gpu.sh                        # PHOTOS=3094 STEPS=200 by default
#   PHOTOS=600 STEPS=20 DEVICE=cpu bench/gpu.sh    # a dry run of the same steps on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -z "${DATA:-}" ]; then
    DATA=$(mktemp -d)
    trap 'rm -rf "$DATA"' EXIT
fi
"$PYTHON" bench/make_photo_set.py --out "$DATA" --photos "${PHOTOS:-3094}"
"$PYTHON" bench/train_speed.py --data "$DATA" --device "${DEVICE:-cuda}" --steps "${STEPS:-200}" --warmup 10
