#!/usr/bin/env bash
# Remakes the figures in docs/figures/ from the reference runs, with the very commands the
# README and docs/findings.md quote. Train the runs first (about 55 and 45 minutes on a 2-core
# CPU with bfloat16, about 5 hours each in float32; the third about 25 minutes):
#   python train.py --recipe features --epochs 160 --snapshot-epochs 0,1,2,5,10,20,40,80,160 --out runs/reference
#   python train.py --recipe features --epochs 160 --arch alexnet --out runs/alexnet-features
#   python train.py --recipe features --epochs 10 --snapshot-epochs 0,1,2,5,10 --out runs/features10
# Run from anywhere: bash docs/make_figures.sh (Chromium takes the explorer's screenshots).
# ablation.png and transfer.png come from their studies' commands in docs/findings.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
figures=docs/figures

python visualize.py filters --checkpoint runs/reference/best.pth
python visualize.py top9 --checkpoint runs/reference/best.pth
python visualize.py evolution --snapshots runs/reference/snapshots
python occlusion.py samples/flower_photos/sunflowers/12471441503_d188b5f31a_m.jpg --checkpoint runs/reference/best.pth
python invariance.py --checkpoint runs/reference/best.pth
python correspondence.py --checkpoint runs/reference/best.pth
python compare_arch.py --checkpoint runs/alexnet-features/best.pth runs/reference/best.pth
python explore.py --checkpoint runs/reference/best.pth --optimize 9
python visualize.py optimize --checkpoint runs/reference/best.pth --layers 1,3,5 --maps-per-layer 6
python visualize.py sanity --checkpoint runs/features10/best.pth
python occlusion.py --summary flower_data/val --checkpoint runs/features10/best.pth --stride 16
python occlusion.py flower_data/val/daisy/16527403771_2391f137c4_n.jpg --checkpoint runs/features10/best.pth
python visualize.py optimize --checkpoint runs/features10/best.pth --layers 3,5 --maps-per-layer 3 --diverse 3 --out runs/features10/diverse

cp runs/reference/curves.png runs/reference/confusion.png "$figures/"
cp runs/reference/visualize/filters.png runs/reference/visualize/top9_layer[1-5].png "$figures/"
cp runs/reference/visualize/evolution_layer2.png runs/reference/visualize/evolution_change.png "$figures/"
cp runs/reference/occlusion/12471441503_d188b5f31a_m.png "$figures/occlusion.png"
cp runs/reference/invariance/invariance.png runs/reference/correspondence/correspondence.png "$figures/"
cp runs/alexnet-features/compare_arch/compare.png "$figures/"
cp runs/features10/visualize/sanity.png runs/features10/visualize/sanity_example.png "$figures/"
cp runs/features10/occlusion/occlusion_summary.png "$figures/"
cp runs/features10/occlusion/16527403771_2391f137c4_n.png "$figures/occlusion_effect.png"
# 256 colours: a quarter of the bytes of the full-colour PNG; the optimised tiles lose nothing visible, the
# smooth backgrounds of some photo patches band slightly.
for name in reference/visualize/optimize:optimize features10/diverse/optimize:optimize_diverse; do
    python -c "from PIL import Image; Image.open('runs/${name%:*}.png').convert('RGB').quantize(256, dither=Image.Dither.NONE).save('$figures/${name#*:}.png', optimize=True)"
done

site="$PWD/runs/reference/explore"
# The layer-5 map whose page is shown: the first (the most active) of top9's figure.
map=$(python -c "import json; print(next(p['map'] for p in json.load(open('runs/reference/visualize/top9.json'))['patches'] if p['layer'] == 5))")
for page in index:index layer1:layer1 "layer5/map$(printf %03d "$map"):map"; do
    chromium --headless --no-sandbox --hide-scrollbars --window-size=1280,757 \
        --screenshot="$figures/explore_${page#*:}.png" "file://$site/${page%:*}.html"
done
