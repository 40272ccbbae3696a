"""``pretrain`` on several processes, GPUs or machines: PyTorch's ``DistributedDataParallel`` under ``torchrun``.

Introduced in ch05_pretraining (beyond the book; appendix A, A.9, shows the book's DDP script). The command
line runs the same command under ``torchrun``::

    torchrun --nproc_per_node=2 -m llmscratch pretrain --out runs/ddp            # 2 GPUs (or 2 CPU processes)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
        -m llmscratch pretrain --out /shared/runs/ddp                           # the same on every machine

Each process reads torchrun's environment (:func:`launch_from_env`), takes its device (``cuda:LOCAL_RANK``, or
the CPU), joins the process group (``nccl`` on CUDA, ``gloo`` on the CPU) and trains a replica of the model on
its share of every batch: :func:`distributed_loaders` gives rank ``r`` of ``W`` the windows ``r, r+W, ...``
of the epoch's permutation (``DistributedSampler``, seeded by the run's seed plus the epoch), so ``W`` ranks
with batch ``b`` see the global batches of one process with batch ``W*b``; ``DistributedDataParallel``
averages the gradients, so the steps agree too (within float rounding: the all-reduce sums in another order).
:func:`train_model_distributed` is ``train_model_resumable``'s loop with that: the logged losses are the mean
over the ranks, the tokens counted are all ranks' tokens, and only rank 0 prints, samples and saves. The
checkpoint holds the unwrapped model (``model.module``), so it resumes on any number of processes, and one
process without torchrun. Dropout: every rank reseeds its generator at the start of each epoch with
``seed + epoch * W + rank`` (other masks on every rank, the same ones when a run is resumed).
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .pretraining import (_check_training_args, calc_loss_batch, create_train_val_loaders, evaluate_model,
                          generate_and_print_sample)
from .resumable import ResumableRun

ENV_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")  # set by torchrun for every process
BACKENDS = ("nccl", "gloo")
# A collective waits this long for a peer that neither answers nor dies (a dead one is noticed at once, and
# torchrun stops the others): long enough for rank 0 to save a GPT-2 XL checkpoint while the others wait.
TIMEOUT = datetime.timedelta(minutes=10)


# The causal masks (the only buffers) never change: no broadcast before every forward pass (PyTorch 2.13 renamed
# the option and warns about the old name)
_DDP_OPTIONS = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
_NO_BUFFER_SYNC = {"forward_sync_buffers" if "forward_sync_buffers" in _DDP_OPTIONS else "broadcast_buffers": False}


class RunStopped(RuntimeError):
    """torchrun stopped this process (SIGTERM) because another process of the run failed."""


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a torchrun launch."""

    rank: int  # 0 .. world_size - 1, over all machines
    world_size: int  # processes in the run
    local_rank: int  # 0 .. local_world_size - 1, on this machine
    local_world_size: int  # processes on this machine

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, plots and writes the checkpoint."""
        return self.rank == 0


def launch_from_env(environ=None) -> Launch | None:
    """The torchrun launch this process belongs to, from ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
    ``LOCAL_WORLD_SIZE``; ``None`` when none of them is set (a plain ``python -m llmscratch``)."""
    environ = os.environ if environ is None else environ
    if not any(name in environ for name in ENV_VARIABLES[:3]):
        return None
    values = {}
    for name in ENV_VARIABLES:
        text = environ.get(name, environ.get("WORLD_SIZE") if name == "LOCAL_WORLD_SIZE" else None)
        try:
            values[name] = int(text)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={text!r}: start the command with torchrun (it sets {', '.join(ENV_VARIABLES)}),"
                             " or unset RANK, WORLD_SIZE and LOCAL_RANK to run one process") from None
    launch = Launch(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"])
    if not (0 <= launch.rank < launch.world_size and 0 <= launch.local_rank < launch.local_world_size):
        raise ValueError(f"RANK={launch.rank}, WORLD_SIZE={launch.world_size}, LOCAL_RANK={launch.local_rank}, "
                         f"LOCAL_WORLD_SIZE={launch.local_world_size} do not fit together: start the command with "
                         "torchrun, which sets them")
    return launch


def choose_backend(device: torch.device, launch: Launch, backend: str | None = None) -> tuple[torch.device, str]:
    """This process's device and the process group's backend, checked before any work.

    ``device`` is the device the command picked (``--device``, ``LLMSCRATCH_DEVICE`` or the best one): CUDA gives
    each process the GPU of its local rank with ``nccl``; the CPU uses ``gloo``. ``backend`` overrides the
    choice (``gloo`` also runs on GPUs). Raises a one-line ``ValueError`` for a launch that cannot work.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"--dist-backend {backend}: use {' or '.join(BACKENDS)}")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"--device {device}: torchrun runs on CUDA GPUs (nccl) or on the CPU (gloo); use "
                         "--device cuda or --device cpu")
    if device.type == "cpu":
        if backend == "nccl":
            raise ValueError("--dist-backend nccl runs on CUDA GPUs only, and the device is the CPU: use "
                             "--dist-backend gloo (the default on the CPU), or --device cuda")
        return device, "gloo"
    count = torch.cuda.device_count()
    if device.index is not None and launch.local_world_size > 1:
        raise ValueError(f"--device {device} names one GPU, but torchrun starts {launch.local_world_size} processes "
                         "on this machine and each takes the GPU of its LOCAL_RANK: use --device cuda")
    if launch.local_world_size > count:
        raise ValueError(f"torchrun starts {launch.local_world_size} processes on this machine but it has {count} "
                         f"GPU(s): use --nproc_per_node={count} or fewer (one process per GPU)")
    backend = backend or "nccl"
    if backend == "nccl" and not dist.is_nccl_available():
        raise ValueError("this PyTorch has no NCCL: use --dist-backend gloo, or install a CUDA build of torch")
    index = device.index if device.index is not None else launch.local_rank
    return torch.device("cuda", index), backend


@contextlib.contextmanager
def process_group(launch: Launch, backend: str, device: torch.device):
    """Join the run's process group for the ``with`` block (torchrun's ``MASTER_ADDR``/``MASTER_PORT``), then
    leave it. On CUDA, first make ``device`` this process's current GPU."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size, timeout=TIMEOUT)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a peer that died: nothing left to leave cleanly
            dist.destroy_process_group()


@contextlib.contextmanager
def stop_on_sigterm():
    """Turn torchrun's SIGTERM (sent to every process when one fails) into :class:`RunStopped`, so the run ends
    through its normal error path (the checkpoint's temporary file removed, the lock released, one line). When
    the block ends with an error, a later SIGTERM is ignored: the process is on its way out, printing why."""
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the process is on its way out
        raise RunStopped("torchrun stopped this process: another process of the run failed")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except BaseException:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise
    signal.signal(signal.SIGTERM, previous)


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of ``value`` over all ranks (every rank gets it)."""
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)  # sum over ranks
    return tensor.item() / dist.get_world_size()


def distributed_loaders(text, context_length, batch_size, launch: Launch, seed: int, train_ratio=0.90):
    """``create_train_val_loaders``'s windows, each rank's share: ``DistributedSampler`` (shuffled by ``seed``
    plus the epoch, call ``train_loader.sampler.set_epoch(epoch)``; full batches only) for training, and the
    validation windows split in order (padded by repeating a few so that every rank has as many)."""
    windows = create_train_val_loaders(text, context_length, batch_size, train_ratio)  # checked, tokenized once
    loaders = []
    for loader, train in zip(windows, (True, False)):
        sampler = DistributedSampler(loader.dataset, num_replicas=launch.world_size, rank=launch.rank,
                                     shuffle=train, seed=seed, drop_last=train)
        loaders.append(DataLoader(loader.dataset, batch_size=batch_size, sampler=sampler, drop_last=train))
    if len(loaders[0]) == 0:
        raise ValueError(f"the training part has {len(loaders[0].dataset)} window(s) of {context_length} tokens, "
                         f"fewer than one batch of {batch_size} for each of the {launch.world_size} processes: use a "
                         "longer text, a smaller batch size or context length, or fewer processes")
    return tuple(loaders)


class DistributedRun(ResumableRun):
    """A ``ResumableRun`` on one rank: every rank loads the checkpoint, only rank 0 saves it (the others wait
    for it at a barrier) and runs the end-of-epoch work (the sample)."""

    def __init__(self, model, optimizer, checkpoint_path=None, *, launch: Launch, **kwargs):
        super().__init__(model, optimizer, checkpoint_path, **kwargs)
        self.launch = launch
        if not launch.is_main:
            self.checkpoint_path = None  # loaded (when resuming), never written here

    def batches(self, loader, epoch: int):
        return super().batches(loader, epoch) if self.launch.is_main else loader

    def end_epoch(self, after=None) -> None:
        super().end_epoch(after if self.launch.is_main else None)
        dist.barrier()  # the checkpoint of this epoch is on disk before any rank goes on


def train_model_distributed(model, train_loader, val_loader, optimizer, device, num_epochs,
                            eval_freq, eval_iter, start_context, tokenizer, *, launch: Launch, seed: int,
                            checkpoint_path=None, resume=False, config=None, run_settings=None, progress=True):
    """``train_model_resumable`` on one rank of a torchrun launch (the process group joined): the same steps
    on ``DistributedDataParallel(model)`` and the loaders of :func:`distributed_loaders`. Returns rank 0's
    view (the same on every rank): the losses averaged over the ranks and the tokens seen by all of them."""
    _check_training_args(train_loader, num_epochs, eval_freq, eval_iter)
    run = DistributedRun(model, optimizer, checkpoint_path, launch=launch, resume=resume, config=config,
                         device=device, run_settings=run_settings, progress=progress)
    ddp_model = torch.nn.parallel.DistributedDataParallel(  # every rank starts from rank 0's weights and buffers
        model, device_ids=[device.index] if device.type == "cuda" else None, **_NO_BUFFER_SYNC)

    def evaluate():
        train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
        return mean_over_ranks(train_loss, device), mean_over_ranks(val_loss, device)

    for epoch in run.epochs(num_epochs):
        train_loader.sampler.set_epoch(epoch)  # this epoch's permutation, the same on every rank
        torch.manual_seed(seed + epoch * launch.world_size + launch.rank)  # this rank's dropout masks
        run.train_epoch(epoch, train_loader, eval_freq=eval_freq, evaluate=evaluate,
                        batch_loss=lambda inputs, targets: calc_loss_batch(inputs, targets, ddp_model, device),
                        count=lambda input_batch: input_batch.numel() * launch.world_size)
        run.end_epoch(after=lambda: generate_and_print_sample(model, tokenizer, device, start_context))
    history = run.state.history
    return (list(history.get("train_losses", [])), list(history.get("val_losses", [])),
            list(history.get("track_tokens_seen", [])))
