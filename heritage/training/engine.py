"""The training loop, to be read top to bottom (in the style of torchvision's reference scripts).

:func:`fit` trains one model: AdamW + OneCycleLR stepped every batch (at the learning rate of the global
batch under DDP); mixed precision (bf16 autocast where the device runs it natively, fp16 with a GradScaler
on older GPUs, float32 on CPUs without bf16 instructions: :func:`heritage.training.devices.autocast_dtype`);
channels_last for CNN encoders; uint8 batches normalised on the device; the fast kernels on a GPU, the
deterministic ones on CPU (:func:`heritage.training.reproducibility.kernel_mode`); optional ``torch.compile``
of the training steps; gradient clipping as one fused norm over all parameters (unscaled once per step).
Nothing reads a value back from the GPU inside an epoch: the loss is summed on the device and read once per
epoch, so the GPU never waits for the host.

Every epoch appends a row to ``history.csv`` (train loss, validation mIoU, LR, images/s with the
first steps left out, peak memory, elapsed time) and, every ``checkpoint_every`` epochs, rewrites
``checkpoint_last.pt`` (everything needed to resume: model, optimizer, scheduler, scaler, RNG states,
history) after ``checkpoint_best.pt`` (the weights of the best validation mIoU so far, kept in memory
in between: one write instead of one per improvement). ``checkpoint_last.pt`` is written new-then-rotate
(:func:`heritage.training.runs.save_resume_checkpoint`): the one before it stays as ``checkpoint_last.prev.pt``.
Starting again on the same run folder resumes from ``checkpoint_last.pt``, or, with a warning, from
``checkpoint_last.prev.pt`` when the newest cannot be read; on CPU the resumed run ends with the same
numbers as an uninterrupted one, because the data order and the augmentations are functions of
(seed, epoch, index) and the RNG states are restored.

SIGTERM or SIGUSR1 (SLURM preemption or ``--signal=B:USR1@<seconds>`` before the time limit) ends
the current step, writes ``checkpoint_last.pt`` (with the position inside the epoch) and raises
:class:`Interrupted`; the ``train`` command then exits with :data:`heritage.errors.EXIT_REQUEUE` (75) so the
scheduler can requeue the job, which resumes where it stopped.

The processes and devices (:mod:`heritage.training.devices`), the seeds and RNG states
(:mod:`heritage.training.reproducibility`) and the scoring (:mod:`heritage.training.evaluation`)
live beside the loop; this module keeps the loop, its checkpoints and its stop requests.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from heritage.data import datasets, working
from heritage import errors
from heritage.modeling import tiling
from heritage.training import runs
from heritage.training.devices import Distributed, autocast_dtype, peak_memory_mb, synchronize, uses_channels_last
from heritage.training.evaluation import evaluate_images
from heritage.training.reproducibility import kernel_mode, kernels, restore_rng_state, rng_state, seed_everything
from heritage.config import RunConfig

# SLURM's preemption and its --signal warning before the time limit: save, exit EXIT_REQUEUE, resume on requeue.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# With several processes, all must stop at the same step; they agree on it every this many steps
# (one tiny all-reduce, the only host sync inside an epoch).
STOP_CHECK_EVERY = 10


class Interrupted(RuntimeError):
    """Training stopped on a signal after writing ``checkpoint_last.pt``; run again to resume."""

    def __init__(self, signal_name: str, epoch: int, step: int, checkpoint: Path):
        super().__init__(f"stopped by {signal_name} at epoch {epoch + 1}, step {step}; "
                         f"{checkpoint} saved, run again to resume (exit code {errors.EXIT_REQUEUE})")
        self.signal_name, self.epoch, self.step, self.checkpoint = signal_name, epoch, step, checkpoint


class Diverged(errors.CommandFailed):
    """The training loss became NaN or infinite: the run stops before it reports numbers of a broken model."""

    def __init__(self, epoch: int, step: int, steps: int, config: RunConfig, checkpoint: Path):
        kept = f"{checkpoint} is kept" if checkpoint.is_file() else "no checkpoint was written"
        clip = (f"lower grad_clip (now {config.grad_clip:g})" if config.grad_clip is not None
                else "set grad_clip (e.g. 1.0)")
        amp = "; with amp=fp16, try amp=bf16 or off" if config.amp == "fp16" else ""
        super().__init__(f"the training loss became NaN or infinite at epoch {epoch + 1}, step {step + 1} of {steps}: "
                         f"the run diverged and is stopped, no metrics are written; the likely setting is "
                         f"lr={config.lr:g}: lower it, or {clip}{amp}; {kept}")


# -- signals -----------------------------------------------------------------------------------


class StopRequest:
    """Installs handlers for SIGTERM/SIGUSR1 that only set a flag; the loop stops after its step.

    A context manager: the previous handlers come back on exit. Outside the main thread (where
    Python cannot install handlers) it stays inert.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
        self.signals = signals
        self.received: str | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def handle(self, signum: int, frame: Any = None) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self, dist: Distributed) -> bool:
        """Whether any process received a signal (an all-reduce when distributed)."""
        if not dist.enabled:
            return self.received is not None
        flag = torch.tensor([self.received is not None], dtype=torch.int32, device=dist.device)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        if flag.item() and self.received is None:
            self.received = "a signal on another rank"
        return bool(flag.item())



# -- optimizer ---------------------------------------------------------------------------------


def build_optimizer(parameters: Any, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW in its fused implementation (one kernel over all parameters), on CPU as on CUDA.

    torch's default on CPU is the per-parameter for-loop, a quarter of a CPU training step (ConvNeXt-T
    UNet, 128 px; bench/results/cpu-step-*.json); ``foreach`` was slower than the for-loop on this
    2-core CPU. The fused update equals the for-loop's to float32 rounding (tests/test_bench.py).
    """
    fused = device.type in ("cuda", "cpu")  # the devices torch's fused AdamW kernels exist for
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)


# -- training ----------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What :func:`fit` leaves for the final evaluation and ``metrics.json``."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_val: dict[str, Any]
    train_images_per_s: float | None
    peak_memory_mb: float
    wall_time_s: float
    kernels: dict[str, bool]


def fit(config: RunConfig, model: nn.Module, loss_fn: nn.Module, train_set: Dataset,
        val_set: working.EvaluationSet, dist: Distributed, progress: bool = True) -> FitResult:
    """Train ``model`` on ``train_set``, select on ``val_set`` (whole images at the working resolution, scored
    with the sliding window), resume from the run folder (:func:`heritage.training.runs.run_dir`) if possible.

    Writes ``history.csv``, ``checkpoint_last.pt`` and ``checkpoint_best.pt`` into the run folder (rank
    0 only). Raises :class:`Interrupted` after checkpointing when SIGTERM/SIGUSR1 arrives.
    """
    device = dist.device
    folder = runs.run_dir(config)
    seed_everything(config.seed)
    progress = progress and dist.is_main
    training = Training.wrap(config, model, loss_fn, dist)
    train_loader = datasets.make_loader(train_set, config.batch_size, train=True, num_workers=config.num_workers,
                                        seed=config.seed, distributed=dist.enabled)
    if len(train_loader) == 0:
        raise errors.InputError(f"{len(train_set)} training samples make no full batch of {config.batch_size} "
                                f"(x {dist.world_size} processes); lower batch_size")
    training.add_optimisation(len(train_loader), device, dist.world_size)
    checkpointer = Checkpointer(folder, config, dist)
    start_epoch, start_step, history = checkpointer.resume(training, progress)
    elapsed_before = history[-1]["elapsed_s"] if history else 0.0
    clock = time.perf_counter()

    epochs_bar = tqdm(range(start_epoch, config.epochs), desc=f"{config.poc_key}/{config.encoder}",
                      unit="epoch", initial=start_epoch, total=config.epochs, disable=not progress)
    with StopRequest() as request, kernels(kernel_mode(device)) as mode:
        stop = SaveOnStop(request, checkpointer, history)
        for epoch in epochs_bar:
            row, images_per_s = train_one_epoch(training, train_loader, epoch, start_step, dist, stop, progress)
            start_step = 0
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                val = validate(training, val_set, dist, progress)  # every process a shard, each the whole result
                if dist.is_main:
                    row.update(_history_metrics(val))
                    checkpointer.observe(epoch + 1, val, training.net)
            row.update(images_per_s=images_per_s, peak_memory_mb=peak_memory_mb(device),
                       elapsed_s=elapsed_before + time.perf_counter() - clock)
            history.append(row)
            if dist.is_main:
                runs.write_history(folder, history)
            if request.received is not None or checkpointer.due(epoch + 1):
                checkpointer.save(training, epoch + 1, 0, history)
            epochs_bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_miou=f"{row.get('val_miou', math.nan):.4f}")
            if request.received is not None and epoch + 1 < config.epochs:
                raise Interrupted(request.received, epoch + 1, 0, folder / runs.LAST_CHECKPOINT)
    epochs_bar.close()
    checkpointer.write_best()
    best = checkpointer.agreed_best()
    speeds = [r["images_per_s"] for r in history if r.get("images_per_s")]
    return FitResult(history=history, best_epoch=best["epoch"], best_val=best["val"],
                     train_images_per_s=float(np.median(speeds)) if speeds else None,
                     peak_memory_mb=max(r["peak_memory_mb"] for r in history) if history else peak_memory_mb(device),
                     wall_time_s=history[-1]["elapsed_s"] if history else 0.0, kernels=mode.record())


@dataclass
class Training:
    """What a training steps: the run's settings, the model, the loss, and the optimisation (AdamW +
    OneCycleLR stepped per batch, a GradScaler that is active only for fp16) with the loss summed on the
    device since the epoch began (read once per epoch, kept in the resume state).

    Two handles to one model: ``net``, the module itself (its weights are saved, evaluation runs it), and
    ``train_model``, the DDP and ``torch.compile`` wrappers around it that only the training steps go
    through (``net`` itself without either): DDP's forward syncs gradients and buffers for a backward pass,
    and evaluation's shapes (sliding-window batches) and inference mode would each recompile the graph."""

    config: RunConfig
    net: nn.Module
    train_model: nn.Module
    loss_fn: nn.Module
    dtype: torch.dtype | None
    channels_last: bool
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    scaler: torch.amp.GradScaler | None = None
    loss_sum: torch.Tensor | None = None

    @classmethod
    def wrap(cls, config: RunConfig, model: nn.Module, loss_fn: nn.Module, dist: Distributed) -> Training:
        device = dist.device
        channels_last = uses_channels_last(config.channels_last, config.encoder, device)
        net = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        train_model: nn.Module = DistributedDataParallel(net, device_ids=[dist.local_rank] if device.type == "cuda"
                                                         else None) if dist.enabled else net
        if config.compile:
            train_model = torch.compile(train_model)
        return cls(config, net, train_model, loss_fn.to(device), autocast_dtype(config.amp, device), channels_last)

    def add_optimisation(self, steps_per_epoch: int, device: torch.device, world_size: int = 1) -> None:
        """AdamW and OneCycleLR at the rate of the global batch (:meth:`RunConfig.lr_for`), a zero loss sum."""
        config = self.config
        lr = config.lr_for(world_size)
        self.optimizer = build_optimizer(self.net.parameters(), lr, config.weight_decay, device)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=lr,
                                                             pct_start=config.pct_start,
                                                             total_steps=config.epochs * steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.loss_sum = torch.zeros((), device=device)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def state_dicts(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dicts(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def train_one_epoch(training: Training, loader: DataLoader, epoch: int, start_step: int, dist: Distributed,
                    stop: SaveOnStop, progress: bool) -> tuple[dict[str, Any], float | None]:
    """One epoch from ``start_step`` (a resumed epoch skips the batches it trained on): the history row's
    first columns (epoch, train loss, LR) and the images/s of the timed steps (the first
    ``timing_skip_steps`` left out). A signal mid-epoch writes the position and raises :class:`Interrupted`
    (``stop``); in the last step it lets the epoch finish (validation, checkpoint) and the caller stops."""
    device, config, loss_sum = dist.device, training.config, training.loss_sum
    steps_per_epoch = len(loader)
    datasets.set_epoch(loader, epoch)
    training.train_model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    parameters = [p for p in training.net.parameters() if p.requires_grad]
    timed_from = min(config.timing_skip_steps, steps_per_epoch - 1)
    timer_start, timed_steps = None, 0
    steps_bar = tqdm(total=steps_per_epoch, initial=start_step, desc=f"epoch {epoch + 1}", unit="batch",
                     leave=False, disable=not progress)
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)  # kept on the device: no sync per step
    for step, (images, masks) in enumerate(loader):
        if step < start_step:  # resumed inside this epoch: these batches were trained on
            continue
        if step == timed_from:
            synchronize(device)
            timer_start = time.perf_counter()
        images, masks = datasets.batch_to_device(images, masks, device, training.memory_format)
        with torch.autocast(device.type, dtype=training.dtype, enabled=training.dtype is not None):
            loss = training.loss_fn(training.train_model(images), masks)
        training.optimizer.zero_grad(set_to_none=True)
        training.scaler.scale(loss).backward()
        if config.grad_clip is not None:
            training.scaler.unscale_(training.optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip, foreach=True)
        training.scaler.step(training.optimizer)
        training.scaler.update()
        training.scheduler.step()
        loss_sum += loss.detach()
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss.detach()), step, first_bad_step)
        timed_steps += step >= timed_from
        steps_bar.update()
        checked = not dist.enabled or (step + 1) % STOP_CHECK_EVERY == 0 or step + 1 == steps_per_epoch
        if checked and stop.request.agreed(dist):
            if step + 1 < steps_per_epoch:  # mid-epoch: save the position
                stop.save_and_raise(training, epoch, step + 1)
            break  # at the end of the epoch: finish it (validation, checkpoint), then stop
    steps_bar.close()
    synchronize(device)
    train_seconds = time.perf_counter() - timer_start if timer_start is not None else None
    train_loss = _mean_over_processes(loss_sum, dist) / steps_per_epoch
    if not math.isfinite(train_loss):  # never report the metrics of a model whose weights went NaN
        bad = int(first_bad_step)
        raise Diverged(epoch, bad if bad >= 0 else start_step, steps_per_epoch, config, stop.checkpointer.last)
    loss_sum.zero_()
    row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": training.scheduler.get_last_lr()[0]}
    images_per_s = timed_steps * config.batch_size * dist.world_size / train_seconds if train_seconds else None
    return row, images_per_s


def validate(training: Training, val_set: working.EvaluationSet, dist: Distributed, progress: bool) -> dict[str, Any]:
    """The validation metrics: whole images with the sliding window, sharded over the processes."""
    config = training.config
    if dist.enabled:  # the processes score shards of one model: rank 0's, the one the checkpoints keep
        _share_buffers(training.net, dist)
    window = tiling.SlidingWindow(tile=config.image_size, batch_size=config.batch_size, dtype=training.dtype)
    return evaluate_images(training.net, val_set, dist, window, config.hierarchical,
                           progress="val" if progress else None).metrics


@dataclass
class SaveOnStop:
    """The stop requests, and what a stop mid-epoch saves: ``checkpoint_last.pt`` with the history so far."""

    request: StopRequest
    checkpointer: Checkpointer
    history: list[dict[str, Any]]

    def save_and_raise(self, training: Training, epoch: int, step: int) -> None:
        """Write the resume state at (epoch, step) and raise :class:`Interrupted`."""
        self.checkpointer.save(training, epoch, step, self.history)
        raise Interrupted(self.request.received or "a signal", epoch, step, self.checkpointer.last)


class Start(NamedTuple):
    """Where :func:`fit` starts: the epoch and the step inside it, and the history rows before them."""

    epoch: int
    step: int
    history: list[dict[str, Any]]


class Checkpointer:
    """The best and the last state of one run folder.

    The best weights wait in memory and are written with ``checkpoint_last.pt`` (or at the end), so a
    noisy validation curve does not cost a checkpoint write per improvement; ``checkpoint_last.pt`` is
    written every ``checkpoint_every`` epochs, at the last one and on a signal, always after the best, so
    it never points at a best epoch that is not on disk. Only rank 0 writes.
    """

    def __init__(self, folder: Path, config: RunConfig, dist: Distributed):
        self.folder, self.config, self.dist = folder, config, dist
        # hashed once, while the data folder is there: a resume state is still written if it vanishes meanwhile
        self.config_hash = config.config_hash()
        self.best: dict[str, Any] = {"epoch": 0, "val_miou": -math.inf, "val": {}}
        self.best_weights: dict[str, torch.Tensor] | None = None
        # False after resuming from checkpoint_last.prev.pt: the unreadable newest must not become the fallback.
        self.rotate = True

    @property
    def last(self) -> Path:
        return self.folder / runs.LAST_CHECKPOINT

    def resume(self, training: Training, progress: bool) -> Start:
        """Where to start: everything comes back from the resume state (into ``training``: the weights, the
        optimisation and the loss sum), including where inside an epoch a signal stopped the run;
        epoch 0, step 0, no history for a fresh start."""
        state, resumed_from = _resume_state(self.folder, self.config, report=self.dist.is_main)
        self.rotate = resumed_from is None or resumed_from.name == runs.LAST_CHECKPOINT
        if state is None:
            return Start(0, 0, [])
        training.load_state_dicts(state)
        training.loss_sum.fill_(state["loss_sum"])
        restore_rng_state(state["rng"])
        self.best = state["best"]
        if progress:
            tqdm.write(f"resuming {self.folder} at epoch {state['epoch'] + 1}, step {state['step']}")
        return Start(state["epoch"], state["step"], state["history"])

    def observe(self, epoch: int, val: dict[str, Any], net: nn.Module) -> None:
        """Keep ``net``'s weights (a CPU copy) when ``val`` is the best validation mIoU so far."""
        if val["miou"] > self.best["val_miou"]:
            self.best = {"epoch": epoch, "val_miou": val["miou"], "val": val}
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}

    def due(self, epoch: int) -> bool:
        """Whether the checkpoint cadence writes ``checkpoint_last.pt`` after ``epoch`` (1-based)."""
        every = self.config.checkpoint_every
        return bool(every) and (epoch % every == 0 or epoch == self.config.epochs)

    def write_best(self) -> None:
        if self.best_weights is not None and self.dist.is_main:
            runs.save_checkpoint(self.folder / runs.BEST_CHECKPOINT, {
                "model": self.best_weights, "config": self.config.to_dict(), "epoch": self.best["epoch"],
                "val_miou": self.best["val_miou"]})
        self.best_weights = None

    def save(self, training: Training, epoch: int, step: int, history: list[dict[str, Any]]) -> None:
        """``checkpoint_last.pt`` at (epoch, step), after the best weights waiting in memory."""
        self.write_best()
        if self.dist.is_main:
            runs.save_resume_checkpoint(self.folder, {
                **training.state_dicts(), "epoch": epoch, "step": step, "loss_sum": float(training.loss_sum),
                "rng": rng_state(), "best": self.best, "history": history, "config_hash": self.config_hash,
            }, rotate=self.rotate)
            self.rotate = True

    def agreed_best(self) -> dict[str, Any]:
        """The best epoch's record; rank 0 decided it, the other processes receive it for metrics.json."""
        if self.dist.enabled:
            shared = [self.best]
            torch_dist.broadcast_object_list(shared, src=0)
            self.best = shared[0]
        return self.best


def _resume_state(folder: Path, config: RunConfig, report: bool = True
                  ) -> tuple[dict[str, Any] | None, Path | None]:
    """(state, its path) of ``checkpoint_last.pt`` (or, with a warning, ``checkpoint_last.prev.pt`` when
    the newest is unreadable) when it belongs to this configuration, else (None, path or None): a fresh
    start. Raises :class:`~heritage.errors.InputError` naming the files to delete when none is readable.
    """
    def log(message: str) -> None:
        if report:  # one warning per run, not one per DDP process
            tqdm.write(message, file=sys.stderr)

    found = runs.load_resume_checkpoint(folder, log=log)
    if found is None:
        return None, None
    state, path = found
    if state.get("config_hash") != config.config_hash():
        log(f"{path}: written for another configuration (hash {state.get('config_hash')}, now "
            f"{config.config_hash()}); starting from scratch")
        return None, path
    return state, path


def _share_buffers(net: nn.Module, dist: Distributed) -> None:
    """Give every process rank 0's buffers. DDP keeps the parameters equal, but each process's forward in
    training mode updates its BatchNorm running statistics with its own last batch after DDP broadcast
    rank 0's; in training DDP broadcasts them again before each forward, so this changes nothing there."""
    for buffer in net.buffers():
        torch_dist.broadcast(buffer, src=0)


def _mean_over_processes(value: torch.Tensor, dist: Distributed) -> float:
    """Read a device scalar once (the epoch's only loss sync), averaged over processes."""
    if dist.enabled:
        value = value.clone()
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.AVG if dist.device.type == "cuda"
                              else torch_dist.ReduceOp.SUM)
        if dist.device.type != "cuda":  # gloo has no AVG
            value /= dist.world_size
    return float(value)


def _history_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The validation columns of ``history.csv``: mIoU (fine classes), and each level's when hierarchical."""
    levels = {f"val_{key}": value for key, value in result.get("hierarchical", {}).items() if key != "fine_miou"}
    return {"val_miou": result["miou"], **levels}

