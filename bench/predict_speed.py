"""Prediction speed: predict.py over a folder against the model's in-memory inference
ceiling, and the cold-start time of classifying one photo against the seed's predict.py.

    python bench/predict_speed.py --checkpoint runs/zfnet/best.pth --photos flower_data/val

(a) predict.py's own classify() over the first --count photos of --photos (decoding in
    threads one batch ahead, float32 channels_last), after one warm-up batch;
(b) ceiling: the same model on random tensors already in memory, same batch and format;
(c) cold start, median of --repeats runs each: `python -c "import torch"`, the seed's
    predict.py (torchvision transforms and matplotlib imported, one photo), and
    `python predict.py PHOTO`.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the project's modules, wherever the bench is started from
import predict  # noqa: E402
from zfnet.checkpoint import load_checkpoint  # noqa: E402

# The seed's predict.py, reduced to what runs without a display: the same imports (torchvision
# transforms, matplotlib), the same transform, one photo, the class and its probability.
SEED_PREDICT = """
import sys, torch
from PIL import Image
from torchvision import transforms
import matplotlib.pyplot as plt
from model import ZFNet
transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
img = torch.unsqueeze(transform(Image.open(sys.argv[1]).convert("RGB")), dim=0)
checkpoint = torch.load(sys.argv[2], weights_only=True)
model = ZFNet(**checkpoint["model_config"])
model.load_state_dict(checkpoint["model"])
model.eval()
with torch.no_grad():
    predict = torch.softmax(torch.squeeze(model(img)), dim=0)
print(checkpoint["classes"][int(torch.argmax(predict))], predict.max().item())
"""


def wall_time(command, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/zfnet/best.pth")
    parser.add_argument("--photos", default="flower_data/val", help="folder of photos for the throughput test")
    parser.add_argument("--photo", default="sunflower.jpg", help="the photo for the cold-start test")
    parser.add_argument("--count", type=int, default=300, help="photos for the throughput test (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model, checkpoint = load_checkpoint(args.checkpoint)
    model = model.to(memory_format=torch.channels_last)
    paths = predict.find_photos([args.photos])[:args.count]

    def classify(batch):
        return list(predict.classify(model, batch, checkpoint["preprocess"], checkpoint["classes"],
                                     torch.device("cpu"), args.batch_size, 1))

    classify(paths[:args.batch_size])
    started = time.perf_counter()
    results = classify(paths)
    ours = len(results) / (time.perf_counter() - started)

    inputs = torch.randn(args.batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(inputs)
        started = time.perf_counter()
        rounds = max(1, len(paths) // args.batch_size)
        for _ in range(rounds):
            model(inputs)
    ceiling = rounds * args.batch_size / (time.perf_counter() - started)

    print(f"threads: {torch.get_num_threads()}; {len(paths)} photos from {args.photos}, batch {args.batch_size}, "
          f"float32 channels_last\n")
    print(f"{'throughput':46} {'img/s':>8} {'of ceiling':>10}")
    print(f"{'predict.py classify() over the folder':46} {ours:8.1f} {ours / ceiling:10.0%}")
    print(f"{'ceiling: random tensors in memory':46} {ceiling:8.1f} {1:10.0%}")

    python = sys.executable
    starts = [("python -c 'import torch' (floor)", [python, "-c", "import torch"]),
              ("seed's predict.py, one photo", [python, "-c", SEED_PREDICT, args.photo, args.checkpoint]),
              ("python predict.py PHOTO", [python, "predict.py", args.photo, "--checkpoint", args.checkpoint])]
    print(f"\n{'cold start, median of ' + str(args.repeats):46} {'seconds':>8}")
    for name, command in starts:
        print(f"{name:46} {wall_time(command, args.repeats):8.2f}")


if __name__ == "__main__":
    main()
