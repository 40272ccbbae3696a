"""The book's DDP script (appendix A, A.9.3), runnable on the CPU: ``python -m llmscratch.ddp_script``.

Introduced in ch01_intro, appendix A, A.9.3. ``ddp_setup``, ``prepare_dataset`` and ``main`` follow the book's
``DDP-script.py`` (and ``DDP-script-torchrun.py``): one process per device, a ``DistributedSampler`` that gives each
process its own share of the training set, the model wrapped in ``DistributedDataParallel`` (which averages the
gradients of all processes before each step). ``ToyDataset``, ``NeuralNetwork`` and ``compute_accuracy`` are
``llmscratch.appendix_a``'s, the same as the book's.

What the course changes, each marked ``# course:`` in the code, so that the script also runs without GPUs:

- the backend: ``nccl`` with one GPU per process when there are enough GPUs, else ``gloo`` on the CPU (the book:
  ``nccl`` and GPUs only); the log says ``[GPU0]`` or ``[CPU0]``;
- the port: a free one, chosen by the launching process (the book's fixed 12345 may be busy); torchrun's
  ``MASTER_ADDR``/``MASTER_PORT`` are kept;
- a process-group timeout of 60 s: a process that dies does not leave the others waiting for 30 minutes;
- each process sets the book's seed: ``mp.spawn`` starts fresh interpreters, which the parent's
  ``torch.manual_seed(123)`` does not reach (``DistributedDataParallel`` copies rank 0's weights to every rank
  anyway);
- ``train_loader.sampler.set_epoch(epoch)``, as in the book's torchrun script: a new shuffle every epoch;
- the batch size, the number of processes and the epochs come from the command line; ``--save-to`` saves the
  trained weights (rank 0), to compare runs. With one process (``--world-size 1``) nothing is spawned; under
  torchrun (``RANK`` and ``WORLD_SIZE`` set) neither: torchrun started the processes.

``run_ddp_script`` (beyond the book) runs the script in a fresh Python process and returns its log, the lines of
each rank together; the notebook uses it.

Usage::

    python -m llmscratch.ddp_script --world-size 2              # 2 processes (gloo on the CPU without 2 GPUs)
    python -m llmscratch.ddp_script --world-size 1 --batch-size 4
    torchrun --nproc_per_node=2 -m llmscratch.ddp_script
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .appendix_a import NeuralNetwork, ToyDataset, compute_accuracy
from .ports import free_port as _free_port  # course: instead of the book's fixed port 12345

PROCESS_GROUP_TIMEOUT = timedelta(seconds=60)  # course: the default (30 min for gloo) hides a crashed rank


def _device_for(rank, world_size):
    """One GPU per process when there are enough GPUs, else the CPU (course: the book assumes GPUs)."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= world_size:
        return torch.device("cuda", rank)
    return torch.device("cpu")


def _print(*values):
    """``print`` in one write: a process's line arrives whole, never cut by another process's output."""
    sys.stdout.write(" ".join(str(value) for value in values) + "\n")
    sys.stdout.flush()


# NEW: function to initialize a distributed process group (1 process / GPU)
# this allows communication among processes
def ddp_setup(rank, world_size):
    """
    Arguments:
        rank: a unique process ID
        world_size: total number of processes in the group
    """
    # rank of machine running rank:0 process; here, all processes are on the same machine
    if "MASTER_ADDR" not in os.environ:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
    # course: any free port, chosen by the launching process (torchrun sets its own)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())

    # course: nccl (NVIDIA Collective Communication Library) with one GPU per process,
    # else gloo (Facebook Collective Communication Library) on the CPU
    device = _device_for(rank, world_size)
    backend = "nccl" if device.type == "cuda" else "gloo"
    init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=PROCESS_GROUP_TIMEOUT)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def prepare_dataset(batch_size=2):
    X_train = torch.tensor([
        [-1.2, 3.1],
        [-0.9, 2.9],
        [-0.5, 2.6],
        [2.3, -1.1],
        [2.7, -1.5]
    ])
    y_train = torch.tensor([0, 0, 0, 1, 1])

    X_test = torch.tensor([
        [-0.8, 2.8],
        [2.6, -1.6],
    ])
    y_test = torch.tensor([0, 1])

    train_ds = ToyDataset(X_train, y_train)
    test_ds = ToyDataset(X_test, y_test)

    train_loader = DataLoader(
        dataset=train_ds,
        batch_size=batch_size,  # course: the book's 2 by default
        shuffle=False,  # NEW: False because of DistributedSampler below
        pin_memory=torch.cuda.is_available(),  # course: the book's True needs a GPU
        drop_last=True,
        # NEW: chunk batches across GPUs without overlapping samples:
        sampler=DistributedSampler(train_ds)  # NEW
    )
    test_loader = DataLoader(
        dataset=test_ds,
        batch_size=2,
        shuffle=False,
    )
    return train_loader, test_loader


# NEW: wrapper
def main(rank, world_size, num_epochs, batch_size=2, save_to=None):

    device = ddp_setup(rank, world_size)  # NEW: initialize process groups
    torch.manual_seed(123)  # course: a spawned process does not inherit the parent's seed
    label = f"[{device.type.upper().replace('CUDA', 'GPU')}{rank}]"  # course: [GPU0] or [CPU0]

    train_loader, test_loader = prepare_dataset(batch_size)
    model = NeuralNetwork(num_inputs=2, num_outputs=2)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    # NEW: wrap model with DDP (course: device_ids only on a GPU)
    model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    # the core model is now accessible as model.module

    for epoch in range(num_epochs):
        # NEW: Set sampler to ensure each epoch has a different shuffle order
        train_loader.sampler.set_epoch(epoch)

        model.train()
        for features, labels in train_loader:

            features, labels = features.to(device), labels.to(device)  # New: use rank
            logits = model(features)
            loss = F.cross_entropy(logits, labels)  # Loss function

            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

            # LOGGING (course: _print writes each line at once, so the processes' lines do not mix)
            _print(f"{label} Epoch: {epoch+1:03d}/{num_epochs:03d}"
                   f" | Batchsize {labels.shape[0]:03d}"
                   f" | Train/Val Loss: {loss:.2f}")

    model.eval()
    train_acc = compute_accuracy(model, train_loader, device=device)
    _print(f"{label} Training accuracy", train_acc)
    test_acc = compute_accuracy(model, test_loader, device=device)
    _print(f"{label} Test accuracy", test_acc)

    if save_to is not None and rank == 0:  # course: keep the trained weights, to compare runs
        torch.save(model.module.state_dict(), save_to)

    destroy_process_group()  # NEW: cleanly exit distributed mode


def _check_run(world_size, batch_size, num_epochs):
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1 process, got {world_size}")
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be at least 1, got {num_epochs}")
    per_rank = -(-5 // world_size)  # DistributedSampler: ceil(5 / world_size) of the 5 training examples per rank
    if not 1 <= batch_size <= per_rank:
        raise ValueError(
            f"each of the {world_size} processes gets {per_rank} training example(s): use a batch_size from 1 to "
            f"{per_rank} (with drop_last=True a larger batch leaves no batch to train on)")


def launch(world_size, num_epochs=3, batch_size=2, save_to=None):
    """Run ``main`` in ``world_size`` processes (``mp.spawn``), or in this one when ``world_size`` is 1."""
    _check_run(world_size, batch_size, num_epochs)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))  # chosen once, here, for every spawned process
    if world_size == 1:
        main(0, 1, num_epochs, batch_size, save_to)
        return
    # NEW: spawn new processes; spawn passes the rank as the first argument
    mp.spawn(main, args=(world_size, num_epochs, batch_size, save_to), nprocs=world_size)


RANK_TAG = re.compile(r"^\[(?:GPU|CPU)(\d+)\]")


def group_by_rank(log):
    """The lines of ``log`` with every rank's lines together, in rank order (the processes print concurrently);
    the other lines (the header) first."""
    lines = log.splitlines()
    return "\n".join(sorted(lines, key=lambda line: int(m.group(1)) + 1 if (m := RANK_TAG.match(line)) else 0))


def run_ddp_script(world_size=2, num_epochs=3, batch_size=2, save_to=None, timeout=300):
    """Run ``python -m llmscratch.ddp_script`` in a fresh process and return its log, grouped by rank.

    A failed run raises ``RuntimeError`` with the script's error output.
    """
    _check_run(world_size, batch_size, num_epochs)
    command = [sys.executable, "-m", "llmscratch.ddp_script", "--world-size", str(world_size),
               "--num-epochs", str(num_epochs), "--batch-size", str(batch_size)]
    if save_to is not None:
        command += ["--save-to", str(save_to)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT", "LOCAL_RANK")}
    shared = str(Path(__file__).resolve().parent.parent)  # the folder holding llmscratch, for the new process
    env["PYTHONPATH"] = os.pathsep.join([shared, *filter(None, [env.get("PYTHONPATH")])])
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"the DDP script failed (exit status {result.returncode}):\n{result.stderr[-3000:]}")
    return group_by_rank(result.stdout)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="The book's DDP script (appendix A.9.3) on GPUs or on the CPU.")
    parser.add_argument("--world-size", type=int, default=None,
                        help="number of processes (default: the number of GPUs if 2 or more, else 2 on the CPU)")
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2, help="examples per batch in each process")
    parser.add_argument("--save-to", default=None, help="save rank 0's trained weights (a state dict) here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun started this process: no spawning
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        _check_run(world_size, args.batch_size, args.num_epochs)
        main(rank, world_size, args.num_epochs, args.batch_size, args.save_to)
    else:
        world_size = args.world_size or (torch.cuda.device_count() if torch.cuda.device_count() >= 2 else 2)
        print("PyTorch version:", torch.__version__)
        print("CUDA available:", torch.cuda.is_available())
        print("Number of GPUs available:", torch.cuda.device_count())
        print("Processes:", world_size, "| backend:", "nccl" if _device_for(0, world_size).type == "cuda" else "gloo")
        sys.stdout.flush()  # course: the header before the processes' lines
        launch(world_size, args.num_epochs, args.batch_size, args.save_to)
