"""Resumable training runs: atomic per-epoch checkpoints, exact RNG restoration and a progress bar.

Introduced in ch05_pretraining, 5.4 (beyond the book). The book's training loops (``train_model_simple``,
appendix D's ``train_model``, chapter 6's ``train_classifier_simple``...) stay the book's. A loop that must
survive an interruption is written beside them with a ``ResumableRun``, the one piece that every chapter and
the command line share::

    run = ResumableRun(model, optimizer, checkpoint_path, resume=True, config=cfg)
    for epoch in run.epochs(num_epochs):           # starts after the last saved epoch
        for input_batch, target_batch in run.batches(train_loader, epoch):
            ...                                    # the book's step; run.state.global_step += 1, ...
            run.state.log(train_losses=..., val_losses=...)
        run.end_epoch(after=lambda: generate_and_print_sample(...))   # save first, then the optional work

Resuming gives exactly the run that was not interrupted, loss for loss on the CPU: the checkpoint holds, with
the model and the optimizer, the random number generators' states at the end of the epoch (torch's CPU and
CUDA generators, Python's ``random``), restored before the next epoch, so the ``DataLoader``'s shuffle order
and the dropout masks come out as they would have. For this, build the loaders the same way (a loader given
its own ``generator=`` is not covered) and use a fresh model and optimizer of the same kind and settings.
Checkpoints are taken at epoch boundaries: an interrupted epoch is run again from its start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoints import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state

REQUIRED_FIELDS = ("epoch", "global_step", "tokens_seen", "rng_state")
LEGACY_HISTORY = ("train_losses", "val_losses", "track_tokens_seen")  # checkpoints saved before ``history``


@dataclass
class TrainingState:
    """Where a run stands: what a checkpoint stores beside the weights and the optimizer."""

    epoch: int = 0  # epochs completed
    global_step: int = -1  # optimizer steps taken, minus one (the book's counter starts at -1)
    tokens_seen: int = 0  # tokens (or examples, in chapter 6) trained on
    history: dict[str, list] = field(default_factory=dict)  # e.g. train_losses, val_losses, track_tokens_seen

    def log(self, **values) -> None:
        """Append each value to its list in ``history`` (``log(train_losses=9.78, val_losses=9.93)``)."""
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)

    @classmethod
    def from_checkpoint(cls, saved: dict, path) -> "TrainingState":
        missing = [name for name in REQUIRED_FIELDS if name not in saved]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}: it was not saved by a resumable run "
                             "(ResumableRun or the command line); start a new run instead of resuming")
        history = saved.get("history")
        if history is None:  # an older checkpoint kept the chapter-5 lists at the top level
            history = {name: saved[name] for name in LEGACY_HISTORY if name in saved}
        return cls(int(saved["epoch"]), int(saved["global_step"]), int(saved["tokens_seen"]),
                   {name: list(values) for name, values in history.items()})


def _same_rng_state(a: dict, b: dict) -> bool:
    return (torch.equal(a["torch"], b["torch"]) and len(a["cuda"]) == len(b["cuda"])
            and all(torch.equal(x, y) for x, y in zip(a["cuda"], b["cuda"]))
            and a["python"]["gauss_next"] == b["python"]["gauss_next"]
            and torch.equal(a["python"]["internal"], b["python"]["internal"]))


class ResumableRun:
    """One training run that saves itself after every epoch and can go on from its last checkpoint.

    ``checkpoint_path=None`` keeps nothing on disk (the loop still gets epochs, a state and progress bars).
    ``resume=True`` loads the checkpoint into ``model`` and ``optimizer`` (``config``, the model's config
    dict, must equal the saved one) and restores the random number generators. ``run_settings``: values that
    describe the run (learning rate, batch size, data...), saved with it and returned as ``saved_settings``
    when resuming, so a caller can refuse or report a change.
    """

    def __init__(self, model, optimizer, checkpoint_path=None, *, resume=False, config=None, device="cpu",
                 run_settings=None, progress=True):
        if resume and checkpoint_path is None:
            raise ValueError("resume=True needs checkpoint_path, the checkpoint to resume from")
        self.model, self.optimizer, self.config = model, optimizer, config
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.run_settings = dict(run_settings or {})
        self.progress = progress
        self.state = TrainingState()
        self.saved_settings = None
        self._saved_rng = None
        if resume:
            saved = load_checkpoint(self.checkpoint_path, model, optimizer, map_location=device, config=config)
            self.state = TrainingState.from_checkpoint(saved, self.checkpoint_path)
            self.saved_settings = saved.get("run_settings")
            set_rng_state(saved["rng_state"])

    def epochs(self, num_epochs: int) -> range:
        """The epochs still to train, 0-based: from the one after the last saved epoch to ``num_epochs - 1``."""
        return range(self.state.epoch, num_epochs)

    def batches(self, loader, epoch: int):
        """``loader``, with a progress bar over its batches when ``progress`` is on (``tqdm.auto``)."""
        if not self.progress:
            return loader
        from tqdm.auto import tqdm

        return tqdm(loader, desc=f"Época {epoch + 1}", leave=False)

    def train_epoch(self, epoch: int, train_loader, batch_loss, evaluate, eval_freq: int,
                    count=lambda input_batch: input_batch.numel()) -> None:
        """One epoch of the book's steps (``train_model_simple``, ``train_classifier_simple``), logged in ``state``.

        Per batch: zero the gradients, ``loss = batch_loss(input_batch, target_batch)``, backward, optimizer step,
        ``state.tokens_seen += count(input_batch)`` (tokens by default; ch06 counts examples). Every ``eval_freq``
        steps ``evaluate()`` gives ``(train_loss, val_loss)``, logged with ``tokens_seen`` and printed as the book
        prints it (``Ep 1 (Step 000005): Train loss ..., Val loss ...``).
        """
        state = self.state
        self.model.train()
        for input_batch, target_batch in self.batches(train_loader, epoch):
            self.optimizer.zero_grad()
            loss = batch_loss(input_batch, target_batch)
            loss.backward()
            self.optimizer.step()
            state.tokens_seen += count(input_batch)
            state.global_step += 1
            if state.global_step % eval_freq == 0:
                train_loss, val_loss = evaluate()
                state.log(train_losses=train_loss, val_losses=val_loss, track_tokens_seen=state.tokens_seen)
                print(f"Ep {epoch+1} (Step {state.global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")

    def save(self) -> Path | None:
        """Write the checkpoint now (atomically: the previous one stays whole until the new one is complete)."""
        if self.checkpoint_path is None:
            return None
        self._saved_rng = get_rng_state()
        return save_checkpoint(
            self.checkpoint_path, self.model, self.optimizer,
            epoch=self.state.epoch, global_step=self.state.global_step, tokens_seen=self.state.tokens_seen,
            history=self.state.history, rng_state=self._saved_rng, config=self.config,
            run_settings=self.run_settings,
        )

    def end_epoch(self, after=None) -> None:
        """Count the epoch as done and save it, then run ``after()`` (samples, plots: work that may fail).

        The checkpoint is written first, so a failing ``after`` never loses the epoch. If ``after`` draws
        random numbers (e.g. it evaluates on a shuffled loader), the checkpoint is written again with the
        generators' new states, so that a resumed run draws what the uninterrupted one drew.
        """
        self.state.epoch += 1
        self.save()
        if after is None:
            return
        after()
        if self._saved_rng is not None and not _same_rng_state(self._saved_rng, get_rng_state()):
            self.save()
