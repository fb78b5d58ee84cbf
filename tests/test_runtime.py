"""zfnet.runtime's process groups, under torchrun on loopback (its seeds and devices are
exercised through train.py in test_train.py)."""

import subprocess
import sys

from tests.helpers import ROOT

# Trains a step of a DistributedDataParallel model and sums as train.py does, then reports
# how many of the threads the runtime started still run after close(), each rank in a file.
PROBE = """
import os
import sys
import torch
from torch.nn.parallel import DistributedDataParallel
from zfnet.runtime import Distributed

def threads():
    return set(os.listdir("/proc/self/task"))

before = threads()
runtime = Distributed("cpu")
started = threads() - before
model = DistributedDataParallel(torch.nn.Linear(4, 1, bias=False))
model(torch.full((1, 4), runtime.rank + 1.0)).sum().backward()
total = runtime.sum(torch.ones(()))
runtime.close()
gradient = model.module.weight.grad[0, 0].item()
left = len(started & threads())
with open(os.path.join(sys.argv[1], f"rank{runtime.rank}.txt"), "w") as report:
    report.write(f"sum {total.item():g}, gradient {gradient:g}, {len(started)} threads, {left} left")
"""


def test_close_joins_the_threads_that_sum_though_data_parallel_keeps_its_group_to_the_end(tmp_path):
    # A gloo thread still alive when Python shuts down aborts the process if it then frees a
    # summed tensor, as it did once at the end of a finished 2-process run. DDP keeps the
    # default group's threads to the end (3 here), so the sums run on a group close() ends.
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    launch = ["--standalone", "--nproc-per-node", "2"]
    command = [sys.executable, "-m", "torch.distributed.run", *launch, str(probe), str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reports = [(tmp_path / f"rank{rank}.txt").read_text().strip() for rank in (0, 1)]
    for report in reports:
        started, left = (int(part.split()[0]) for part in report.split(", ")[2:])
        assert report.startswith("sum 2, gradient 1.5,"), report  # inputs 1 and 2, averaged
        assert started - left >= 2, report  # a network loop and a worker at least: the summing group's
