"""Where the scripts run: device choice, the distributed process group, seeded generators."""

import datetime
import hashlib
import os

import torch
import torch.distributed as dist

from zfnet.errors import UserError


def pick_device(name="auto"):
    """CUDA, then Apple MPS, then CPU for "auto"; otherwise the named device, checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asked for, but Apple MPS is not available")
    return device


def derived_seed(*parts):
    """A 63-bit seed from any mix of numbers and strings, different for every combination:
    each epoch, process and purpose gets its own stream, so a resumed run draws the same
    numbers as an uninterrupted one without replaying earlier epochs."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts):
    return torch.Generator().manual_seed(derived_seed(*parts))


class Distributed:
    """The torchrun process group when started by torchrun, else a single process."""

    def __init__(self, device_name):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world_size > 1
        if not self.enabled:
            self.device = pick_device(device_name)
            return
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = pick_device(device_name)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if attempt is None:
            dist.init_process_group(backend)
        else:
            join_restartable_group(backend, self.rank, self.world_size, attempt)
        # The sums and barriers below run on a group of their own. DistributedDataParallel
        # keeps the default group alive until the process ends, gloo's threads and all: one
        # that let go of a summed tensor only after Python began to shut down would abort the
        # process after a finished run ("terminate called without an active exception"). This
        # group nothing else holds, so close() joins its threads while Python still runs.
        self.group = dist.new_group()

    @property
    def is_main(self):
        return self.rank == 0

    def sum(self, tensor):
        """`tensor` summed over all processes (itself when there is one)."""
        if self.enabled:
            tensor = tensor.clone()
            dist.all_reduce(tensor, group=self.group)
        return tensor

    def barrier(self):
        if self.enabled:
            dist.barrier(group=self.group)

    def close(self):
        if self.enabled:
            dist.destroy_process_group()
            self.group = None  # the last reference: the group's threads are joined here


def join_restartable_group(backend, rank, world_size, attempt):
    """The default group for restart `attempt` of torchrun's workers. Workers started again
    after a failure (--max-restarts) meet in the same store as the group before them; without
    a prefix of their own, gloo would read the dead workers' addresses and wait for them."""
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=rank == 0 and not agent_store,
        timeout=datetime.timedelta(minutes=30),
    )
    store = dist.PrefixStore(f"zfnet/attempt{attempt}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)


def native_bfloat16(device):
    """Whether bfloat16 autocast runs on hardware support here: any CUDA GPU from Ampere on,
    or a CPU with AVX512-BF16 or AMX (elsewhere PyTorch emulates it, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        capability = torch._C._cpu._get_cpu_capability()
    except AttributeError:  # a private API: without it, assume no support
        return False
    return bool(capability.get("avx512_bf16") or capability.get("amx_bf16"))
