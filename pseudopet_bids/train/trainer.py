"""One generic trainer for every :class:`~pseudopet_bids.models.base.TranslationModel`.

The model describes its optimisation phases and losses; this module owns everything else:
device choice, bf16 autocast on CUDA, channels-last weights where they pay, gradient
accumulation (doubled for the failing phase when CUDA runs out of memory), data parallelism
across processes started by ``torchrun`` (gradients averaged with an all-reduce after each
phase's backward pass: NCCL on GPUs, gloo on CPU or with more processes than GPUs; each rank
seeded with seed + rank), EMA of the weights the model names, LR schedules, seeding, progress
output, loss/validation logs (read from the device once per logging interval), and atomic
resumable checkpoints (``models/checkpoint.py``; snapshotted to the host, written by a
background thread).

Resuming is exact on CPU (and on CUDA with ``--deterministic``): the data sampler is a function
of the step, and the checkpoint holds the optimizers, schedulers, EMA, AMP scaler, every rank's
extra state (image pools) and RNG states (CPU and the rank's own GPU), the step and the logs. A
checkpoint made with another configuration (``config_hash``) is refused.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import torch

from pseudopet_bids import provenance
from pseudopet_bids.config import RunConfig, default
from pseudopet_bids.device import configure_determinism, flush_denormals, resolve_device
from pseudopet_bids.errors import ProcessingError, UsageError
from pseudopet_bids.io.files import atomic_write_text
from pseudopet_bids.models import checkpoint as ckpt
from pseudopet_bids.models.base import Phase, TranslationModel
from pseudopet_bids.progress import ProgressReporter

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")
#: Longest gap between two progress lines of a training (a CPU step may take seconds).
PROGRESS_MAX_INTERVAL_S = 120.0
#: Steps after which the first progress line gives the rate and the ETA.
EARLY_ETA_STEPS = 5
#: ``torch.compile`` backend of ``--compile``.
COMPILE_BACKEND = "inductor"


@dataclass
class TrainSettings:
    """How to train (not what: that is the model's preset).

    Attributes
    ----------
    steps
        Optimisation steps in total.
    batch_size
        Slices per domain per step and per process (split into ``accumulate`` micro-batches).
    accumulate
        Micro-batches per step (gradient accumulation).
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun: the local rank's GPU).
    amp
        bf16 autocast on CUDA (ignored on CPU, where bf16 is slower and less exact).
    checkpoint_every, checkpoint_minutes
        Save the resumable state every that many steps or minutes, whichever comes first.
    val_every
        Run the validation callback every that many steps (and at the end); 0 = only at the end.
    log_every
        Steps between rows of the loss log.
    seed
        Seeds torch (all devices) before the first step.
    resume
        Continue from ``state/`` when present.
    deterministic
        CUDA: deterministic kernels (``--deterministic``, :func:`configure_determinism`).
    compile
        ``torch.compile`` the networks of the phases (``--compile``; the discriminator's R1
        pass stays eager: compiled double backward is not supported).
    channels_last
        Channels-last weights for the networks without instance norm (:func:`_pays_channels_last`).
    """

    # the defaults shared with the command line are those of the run config (defined once)
    steps: int
    batch_size: int
    accumulate: int = default("accumulate")
    device: str = default("device")
    amp: bool = True
    channels_last: bool = True
    checkpoint_every: int = default("checkpoint_every")
    checkpoint_minutes: float = default("checkpoint_minutes")
    val_every: int = default("val_every")
    log_every: int = 10
    seed: int = default("seed")
    resume: bool = default("resume")
    deterministic: bool = default("deterministic")
    compile: bool = default("compile")

    @classmethod
    def from_config(cls, cfg: RunConfig, steps: int, batch_size: int) -> "TrainSettings":
        """The settings of ``group --train`` (``steps`` and ``batch_size``: the preset's
        values unless the command line set them)."""
        tr, ex = cfg.training, cfg.execution
        return cls(steps=steps, batch_size=batch_size, accumulate=tr.accumulate,
                   device=ex.device, checkpoint_every=tr.checkpoint_every,
                   checkpoint_minutes=tr.checkpoint_minutes, val_every=tr.val_every,
                   seed=ex.seed, resume=tr.resume, deterministic=ex.deterministic,
                   compile=tr.compile)


def _pays_channels_last(module: torch.nn.Module) -> bool:
    """Whether a network gains from channels-last weights: not when it holds instance norm,
    whose output is NCHW whatever its input (so every convolution would convert layouts);
    the SynDiff generators and time-conditioned discriminators (group norm, no instance norm)
    gain on tensor cores."""
    has_params = any(True for _ in module.parameters())
    return has_params and not any(isinstance(m, torch.nn.InstanceNorm2d)
                                  for m in module.modules())


def _host_copy(obj: Any) -> Any:
    """A copy of a nested state whose tensors are fresh host tensors (a consistent snapshot,
    written while training goes on)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _host_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_host_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_host_copy(v) for v in obj)
    return obj


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give the optimizer's per-parameter state (Adam's moments) the memory layout of its
    parameter: a loaded state is contiguous (NCHW) while channels-last parameters are NHWC,
    which would push the fused and foreach Adam kernels off their fast path."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape \
                        and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _resplit(ctxs: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    """The per-micro-batch contexts of earlier phases cut to new micro-batch ``sizes`` (after
    an out-of-memory retry raised the accumulation): their tensors are concatenated along the
    batch dimension and split again; other values are shared."""
    if len(ctxs) == len(sizes) and all(_batch_len(c) in (None, s)
                                       for c, s in zip(ctxs, sizes)):
        return ctxs
    keys = list(dict.fromkeys(k for c in ctxs for k in c))
    out: list[dict[str, Any]] = [{} for _ in sizes]
    for key in keys:
        values = [c[key] for c in ctxs]
        if all(isinstance(v, torch.Tensor) for v in values):
            for part, chunk in zip(out, torch.cat(values).split(sizes)):
                part[key] = chunk
        else:
            for part in out:
                part[key] = values[0]
    return out


def _batch_len(ctx: dict[str, Any]) -> int | None:
    lens = {len(v) for v in ctx.values() if isinstance(v, torch.Tensor)}
    return lens.pop() if len(lens) == 1 else None


def lr_lambda(schedule: str, total: int, lr: float, lr_min: float) -> Callable[[int], float]:
    """Multiplier of the base LR at step ``s`` for the schedules of :class:`Phase`."""
    if schedule == "linear-half":
        half = total // 2

        def linear(s: int) -> float:
            return 1.0 if s < half else max(0.0, 1.0 - (s - half) / max(1, total - half))
        return linear
    if schedule == "cosine":
        floor = lr_min / lr

        def cosine(s: int) -> float:
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        return cosine
    if schedule == "constant":
        return lambda s: 1.0
    raise ValueError(f"unknown LR schedule {schedule!r}")


#: Timeout of the process group's collectives: longer than anything one rank does while the
#: others wait in a collective (rank 0's checkpoints and validation); NCCL's default is 10 min.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=60)
#: Longest wait of the other ranks for rank 0's work in :meth:`_Distributed.main_first`
#: (preprocessing every uncached 1 mm control, serially).
MAIN_FIRST_TIMEOUT = timedelta(hours=48)


class _Distributed:
    """Process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""

    def __init__(self, device_name: str, timeout: timedelta = PROCESS_GROUP_TIMEOUT):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owned = False
        if self.world_size > 1:
            import torch.distributed as dist

            use_cuda = device_name != "cpu" and torch.cuda.is_available()
            # NCCL needs a GPU per process; more processes than GPUs (e.g. checking 2 ranks
            # on one GPU) share them through gloo, which also reduces CUDA tensors
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world_size)))
            own_gpu = use_cuda and local_world <= torch.cuda.device_count()
            self.device = torch.device(
                f"cuda:{self.local_rank % torch.cuda.device_count()}") if use_cuda \
                else torch.device("cpu")
            if use_cuda:
                torch.cuda.set_device(self.device)
            if use_cuda and not own_gpu:
                LOGGER.warning("more processes than GPUs: rank %d shares %s (gloo backend)",
                               self.rank, self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if own_gpu else "gloo", timeout=timeout)
                self.owned = True
        else:
            self.device = resolve_device(device_name)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        if self.world_size == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast_params(self, model: torch.nn.Module) -> None:
        if self.world_size == 1:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor, 0)

    def main_first(self, key: str, work: Callable[[], T],
                   wait: timedelta = MAIN_FIRST_TIMEOUT) -> T:
        """``work()`` on rank 0 first, then on the other ranks (e.g. rank 0 fills a cache that
        the others then read).

        The other ranks wait on a key of the process group's store, not in a collective: a
        collective would abort after the process group's timeout (NCCL's default: 10 min,
        which preprocessing 10–20 uncached 1 mm controls exceeds). A failure of rank 0 is
        passed on, so the others do not wait for ever.
        """
        if self.world_size == 1:
            return work()
        import torch.distributed as dist

        store = dist.distributed_c10d._get_default_store()
        if self.main:
            try:
                result = work()
            except BaseException:
                store.set(key, "failed")
                raise
            store.set(key, "done")
            return result
        store.wait([key], wait)
        if store.get(key) != b"done":
            raise ProcessingError(f"rank 0 failed in {key}; see its log", None,
                                  "fix the problem rank 0 reported and rerun")
        return work()

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (every rank must call it)."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (decisions taken from a clock, which the ranks do
        not share, must be the same on all of them)."""
        if self.world_size == 1:
            return flag
        import torch.distributed as dist

        value = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(value, 0)
        return bool(value.item())

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            # rank 0 still exports while the others are done: tearing gloo down under a peer
            # that is still connected aborts the process ("terminate called without an
            # active exception"), so every rank leaves together
            dist.barrier()
            dist.destroy_process_group()


class Trainer:
    """Train ``model`` with batches from ``sampler`` into ``model_dir`` (see module docstring).

    Parameters
    ----------
    model
        The model (weights already initialised with the run's seed).
    sampler
        Anything with ``batch(step) -> {"mri": array, "pet": array}``; built per rank.
    settings
        :class:`TrainSettings`.
    model_dir
        ``OUTPUT_DIR/models/<name>``.
    card
        Model-card fields fixed before training (model, preset, hyper-parameters, grid,
        scaling, data, ``config_hash``); the trainer adds weights, metrics and timings.
    validate
        ``validate(model) -> dict[str, float]`` on held-out paired data (EMA weights applied),
        or None.
    """

    def __init__(self, model: TranslationModel, sampler, settings: TrainSettings,
                 model_dir: Path, card: dict[str, Any],
                 validate: Callable[[TranslationModel], dict[str, float]] | None = None,
                 dist: _Distributed | None = None):
        self.dist = dist or _Distributed(settings.device)
        self.device = self.dist.device
        configure_determinism(self.device, settings.deterministic)
        flush_denormals()
        self.model = model.to(self.device)
        #: networks in channels-last layout: not those with instance norm, which returns NCHW
        #: for NHWC input, so that every convolution around it would convert the layout
        self.channels_last = [name for name, child in model.named_children()
                              if settings.channels_last and _pays_channels_last(child)]
        for name in self.channels_last:
            getattr(model, name).to(memory_format=torch.channels_last)
        self.sampler = sampler
        self.s = settings
        self.model_dir = Path(model_dir)
        self.card = dict(card)
        self.validate = validate
        self.phases: list[Phase] = model.phases()
        self.params = {ph.name: [p for m in ph.modules
                                 for p in getattr(model, m).parameters()]
                       for ph in self.phases}
        cuda = self.device.type == "cuda"
        # one fused kernel on CUDA; elsewhere the foreach (multi-tensor) implementation
        self.optimizers = {ph.name: torch.optim.Adam(self.params[ph.name], lr=ph.lr,
                                                     betas=ph.betas, fused=True if cuda else None,
                                                     foreach=None if cuda else True)
                           for ph in self.phases}
        self.schedulers = {ph.name: torch.optim.lr_scheduler.LambdaLR(
            self.optimizers[ph.name], lr_lambda(ph.schedule, settings.steps, ph.lr, ph.lr_min))
            for ph in self.phases}
        self.amp = settings.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 needs no scaling
        self.ema = {name: p.detach().clone() for name, p in model.named_parameters()
                    if model.ema_decay and name.split(".")[0] in model.ema_modules}
        if settings.compile:
            for name in dict.fromkeys(m for ph in self.phases for m in ph.modules):
                getattr(model, name).compile(backend=COMPILE_BACKEND)
        self._io = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._writing: Future[None] | None = None
        self.step = 0
        self.accumulate = settings.accumulate
        self.log_rows: list[dict[str, float]] = []
        self.val_rows: list[dict[str, float]] = []
        self.elapsed = 0.0

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (see module docstring)."""
        return {"step": self.step, "config_hash": self.card["config_hash"],
                "model": {k: v.detach() for k, v in self.model.state_dict().items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "scaler": self.scaler.state_dict(), "ema": dict(self.ema),
                "extra": self.model.extra_state(), "accumulate": self.accumulate,
                "rng": self._rng_state(),
                "log_rows": self.log_rows, "val_rows": self.val_rows, "elapsed": self.elapsed,
                "settings": asdict(self.s)}

    def load_state(self, state: dict[str, Any]) -> None:
        if state["config_hash"] != self.card["config_hash"]:
            raise UsageError("the saved training state was made with another configuration "
                             f"(config hash {state['config_hash']} != "
                             f"{self.card['config_hash']})", self.model_dir / ckpt.STATE_DIR,
                             "rerun with the original settings, or without --resume "
                             "after deleting the model folder")
        self.model.load_state_dict(state["model"])
        params = dict(self.model.named_parameters())
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
            _match_layouts(o)
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.scaler.load_state_dict(state["scaler"])
        # the saved tensors are contiguous: back to the parameters' (channels-last) layout
        self.ema = {k: torch.empty_like(params[k]).copy_(v) for k, v in state["ema"].items()}
        self.accumulate = int(state["accumulate"])
        # each rank continues its own random stream and image pools (seed + rank); a state
        # saved by another number of processes continues with rank 0's
        ranks = state.get("ranks") or []
        own = ranks[self.dist.rank] if len(ranks) == self.dist.world_size else state
        if len(ranks) not in (0, self.dist.world_size):
            LOGGER.warning("the checkpoint was written by %d processes, this run has %d: the "
                           "resumed training is not the uninterrupted one", len(ranks),
                           self.dist.world_size)
        self.model.load_extra_state(own["extra"])
        self._set_rng_state(own["rng"])
        self.step = int(state["step"])
        self.log_rows = list(state["log_rows"])
        self.val_rows = list(state["val_rows"])
        self.elapsed = float(state["elapsed"])

    def _rng_state(self) -> dict[str, Any]:
        """The CPU generator's state and that of this rank's own GPU only: touching the
        other visible GPUs would create a CUDA context on each of them (and fail in
        exclusive-process mode)."""
        cuda = [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else []
        return {"torch": torch.get_rng_state(), "cuda": cuda}

    def _set_rng_state(self, rng: dict[str, Any]) -> None:
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and self.device.type == "cuda":
            # states of earlier versions hold every visible GPU's: take this device's
            states = list(rng["cuda"])
            index = self.device.index or 0
            own = states[0] if len(states) == 1 else states[min(index, len(states) - 1)]
            torch.cuda.set_rng_state(own, self.device)

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Temporarily put the EMA weights into the model (validation, export)."""
        if not self.ema:
            yield
            return
        params = dict(self.model.named_parameters())
        saved = {k: params[k].detach().clone() for k in self.ema}
        with torch.no_grad():
            for k, v in self.ema.items():
                params[k].copy_(v)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in saved.items():
                    params[k].copy_(v)

    # -- one step ----------------------------------------------------------------------------
    def _host_batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of ``step`` on the host, in pinned memory on CUDA (prepared by a thread
        while the device runs the step before; the sampler is a function of the step)."""
        pin = self.device.type == "cuda"
        return {k: torch.from_numpy(v).pin_memory() if pin else torch.from_numpy(v)
                for k, v in self.sampler.batch(step).items()}

    def _to_device(self, arrays: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Host batch → device: asynchronous copies from pinned memory on CUDA."""
        return {k: torch.as_tensor(v).to(self.device, non_blocking=self.device.type == "cuda")
                for k, v in arrays.items()}

    def _split(self, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """The step's batch cut into ``accumulate`` micro-batches (fewer if it is smaller)."""
        n = len(batch["mri"])
        bounds = np.linspace(0, n, max(1, min(self.accumulate, n)) + 1).astype(int)
        return [{k: v[a:b] for k, v in batch.items()} for a, b in zip(bounds[:-1], bounds[1:])]

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimisation step: each phase's micro-batches, all-reduce, optimizer step.

        Returns the logged values as scalar tensors on the device: reading them here would
        wait for the device every step; :meth:`fit` reads them once per logging interval.
        Each phase back-propagates into its own parameters only (``backward(inputs=...)``:
        the other networks' weight gradients are not computed, without switching
        ``requires_grad`` of every tensor twice per step).

        CUDA out of memory in a phase's forward or backward pass retries *that phase* with
        twice the micro-batches: the phases already done are not run again (their optimizers
        and schedulers step once per step), the failed attempt's tensors are freed before the
        cache is emptied, its random draws are undone (the retry draws the same numbers), and
        the all-reduce of the other ranks, which wait in the same phase, pairs with this one.
        """
        n = len(batch["mri"])
        ctxs: list[dict[str, Any]] = [{}]
        logs: dict[str, torch.Tensor] = {}
        for phase in self.phases:
            opt = self.optimizers[phase.name]
            rng = self._rng_state()
            while True:
                micro = self._split(batch)
                ctxs = _resplit(ctxs, [len(mb["mri"]) for mb in micro])
                attempt = [dict(c) for c in ctxs]  # what this phase adds is undone on a retry
                opt.zero_grad(set_to_none=True)
                try:
                    phase_logs = self._run_phase(phase.name, micro, attempt, n)
                    break
                except torch.cuda.OutOfMemoryError:
                    pass  # handled below, once the exception and its frames are released
                del attempt
                opt.zero_grad(set_to_none=True)
                self._set_rng_state(rng)
                self._raise_accumulate(n)
            ctxs = attempt
            self.dist.average_grads(self.params[phase.name])
            opt.step()
            self.schedulers[phase.name].step()
            logs.update(phase_logs)
        if self.ema:
            # warm-up (as TensorFlow's ExponentialMovingAverage with num_updates): a plain 0.999
            # average still holds 37 % of the random initial weights after 1000 steps, which
            # ruins short (CPU-preset) trainings; long trainings reach the nominal decay
            decay = min(self.model.ema_decay, (1.0 + self.step) / (10.0 + self.step))
            params = dict(self.model.named_parameters())
            averages = list(self.ema.values())
            with torch.no_grad():  # one multi-tensor kernel each, the same arithmetic
                torch._foreach_mul_(averages, decay)
                torch._foreach_add_(averages, [params[k] for k in self.ema], alpha=1 - decay)
        return logs

    def _run_phase(self, name: str, micro: list[dict[str, torch.Tensor]],
                   ctxs: list[dict[str, Any]], n: int) -> dict[str, torch.Tensor]:
        """Forward and backward passes of phase ``name`` over the micro-batches (gradients
        accumulated, weighted by micro-batch size); returns the phase's logs (on the device)."""
        total: torch.Tensor | float = 0.0
        logs: dict[str, Any] = {}
        params = self.params[name]
        for mb, ctx in zip(micro, ctxs):
            w = len(mb["mri"]) / n
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                loss, parts_log = self.model.phase_loss(name, mb, ctx, self.step)
            (loss * w).backward(inputs=params)
            total = total + loss.detach().float() * w
            for k, v in parts_log.items():
                logs[k] = logs.get(k, 0.0) + torch.as_tensor(v).float() * w
        logs[name] = total
        return logs

    def _raise_accumulate(self, n: int) -> None:
        """After CUDA ran out of memory: empty the cache and double the micro-batches."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.accumulate >= n:
            raise ProcessingError("CUDA ran out of memory even with one slice per micro-batch",
                                  None, "use a smaller preset, free the GPU, or train with "
                                  "--device cpu")
        self.accumulate *= 2
        LOGGER.warning("CUDA out of memory: gradient accumulation raised to %d micro-batches "
                       "per step", self.accumulate)

    def _step_with_backoff(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        try:
            return self._train_step(self._to_device(batch))
        except torch.cuda.OutOfMemoryError:
            raise ProcessingError("CUDA ran out of memory outside the forward and backward "
                                  "passes (the all-reduce or the optimizer step)", None,
                                  "use a smaller preset or batch size, or free the GPU"
                                  ) from None

    # -- outputs -----------------------------------------------------------------------------
    def _write_logs(self, log_rows: list[dict[str, float]] | None = None,
                    val_rows: list[dict[str, float]] | None = None) -> None:
        for name, rows in (("train_log.csv", self.log_rows if log_rows is None else log_rows),
                           ("validation_log.csv", self.val_rows if val_rows is None
                            else val_rows)):
            if not rows:
                continue
            keys = list(dict.fromkeys(k for r in rows for k in r))
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=keys, restval="")
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(self.model_dir / name, buf.getvalue())

    def save_checkpoint(self) -> None:
        """Save the resumable state and the logs (every rank calls it; rank 0 writes).

        The state is copied to the host here (a consistent snapshot: training goes on
        changing the tensors) and written to disk by a background thread while training
        continues (the ``paper`` SynDiff state is about 2 GB); the previous write is finished
        first, and :meth:`fit` waits for the last one.
        """
        # what differs between the ranks: their random streams and image pools
        ranks = self.dist.gather({"rng": self._rng_state(), "extra": self.model.extra_state()})
        if not self.dist.main:
            return
        state = self.state()
        if self.dist.world_size > 1:
            state["ranks"] = ranks
        snapshot = _host_copy(state)
        self.wait_for_checkpoint()
        self._writing = self._io.submit(self._write_checkpoint, snapshot)

    def _write_checkpoint(self, snapshot: dict[str, Any]) -> None:
        ckpt.save_training_state(self.model_dir, snapshot)
        self._write_logs(snapshot["log_rows"], snapshot["val_rows"])
        LOGGER.info("checkpoint at step %d written to %s", snapshot["step"],
                    self.model_dir / ckpt.STATE_DIR)

    def wait_for_checkpoint(self) -> None:
        """Finish the checkpoint being written (its error, if any, is raised here)."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()

    def export(self) -> dict[str, Any]:
        """Write the inference weights (EMA applied) and the model card; returns the card."""
        with self.ema_weights():
            # copies: .cpu()/.contiguous() may return the parameters themselves, which the
            # context manager then restores to the raw (non-EMA) weights before saving
            tensors = {k: v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
                       for k, v in self.model.state_dict().items()
                       if k.split(".")[0] in self.model.export_modules()}
        sha = ckpt.save_weights(self.model_dir / ckpt.WEIGHTS, tensors)
        card = {**self.card, "format_version": 1, "weights_sha256": sha,
                "steps_done": self.step, "training_seconds": round(self.elapsed, 1),
                "device": str(self.device), "world_size": self.dist.world_size,
                "software": provenance.software_versions(),
                "validation": self.val_rows[-1] if self.val_rows else {},
                "ema_decay": self.model.ema_decay}
        ckpt.write_card(self.model_dir, card)
        return card

    def _validate(self) -> None:
        if self.validate is None or not self.dist.main:
            return
        self.model.eval()
        with self.ema_weights():
            metrics = self.validate(self.model)
        self.model.train()
        row = {"step": self.step, **{k: round(float(v), 5) for k, v in metrics.items()}}
        self.val_rows.append(row)
        LOGGER.info("validation at step %d: %s", self.step,
                    ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def _check_finite(self, window: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        """Means of the logged values since the last logging step, read from the device at
        once; a phase loss that was not finite stops the training."""
        if not window:
            return {}
        keys = list(window)
        means = torch.stack([torch.stack([v.to(self.device) for v in window[k]]).double().mean()
                             for k in keys]).tolist()
        out = dict(zip(keys, means))
        bad = [ph.name for ph in self.phases if not math.isfinite(out.get(ph.name, 0.0))]
        if bad:
            first = self.step - len(window[bad[0]]) + 1
            raise ProcessingError(f"the {bad[0]} loss became {out[bad[0]]} between steps "
                                  f"{first} and {self.step}", None, "lower the learning rate "
                                  "or check the training data")
        return out

    # -- loop --------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``settings.steps`` (resuming when asked) and export; returns the card."""
        state_json = self.model_dir / ckpt.STATE_DIR / "training_state.json"
        if self.s.resume and state_json.exists():
            self.load_state(ckpt.load_training_state(self.model_dir, "cpu"))
            LOGGER.info("resumed from step %d", self.step)
        elif self.s.resume:
            LOGGER.info("--resume: no saved state in %s, starting at step 0", self.model_dir)
        if self.step == 0:  # TrainSettings.seed (a resumed run restores the saved RNG state)
            # seed + rank, as the official SynDiff: the ranks draw different t, noise and z
            # (the same seed made every GPU draw the same ones); the weights are rank 0's
            torch.manual_seed(self.s.seed + self.dist.rank)
        self.dist.broadcast_params(self.model)
        self.model.train()
        # a bar with the losses on a terminal, else a log line every 5 %, at most
        # PROGRESS_MAX_INTERVAL_S apart, and one after the first steps: an early ETA
        bar = ProgressReporter(self.s.steps, "training", unit="steps", initial=self.step,
                               enabled=self.dist.main, min_interval_s=0.0, every_fraction=0.05,
                               logger=LOGGER, max_interval_s=PROGRESS_MAX_INTERVAL_S,
                               first_at=min(self.step + EARLY_ETA_STEPS, self.s.steps))
        postfix: dict[str, float] = {}
        t_last_ckpt = time.monotonic()
        t0 = time.monotonic() - self.elapsed
        window: dict[str, list[torch.Tensor]] = {}
        prefetch = ThreadPoolExecutor(1, thread_name_prefix="batches")
        try:
            upcoming = prefetch.submit(self._host_batch, self.step)
            while self.step < self.s.steps:
                batch = upcoming.result()
                if self.step + 1 < self.s.steps:
                    upcoming = prefetch.submit(self._host_batch, self.step + 1)
                logs = self._step_with_backoff(batch)
                self.step += 1
                for k, v in logs.items():
                    window.setdefault(k, []).append(v)
                if self.step % self.s.log_every == 0 or self.step == self.s.steps:
                    # the only wait for the device in the loop: one per logging interval
                    means = self._check_finite(window)
                    self.elapsed = time.monotonic() - t0
                    row = {"step": self.step, "seconds": round(self.elapsed, 2),
                           **{f"lr_{k}": s.get_last_lr()[0] for k, s in self.schedulers.items()},
                           **means}
                    self.log_rows.append(row)
                    window = {}
                    postfix = {k: v for k, v in row.items() if k in ("G", "D")}
                bar.update_to(self.step, postfix)
                if self.s.val_every and self.step % self.s.val_every == 0 \
                        and self.step < self.s.steps:
                    self._validate()
                due = self.step % self.s.checkpoint_every == 0
                if not due and self.step % self.s.log_every == 0:  # by time: rank 0's clock
                    due = self.dist.agree(
                        time.monotonic() - t_last_ckpt > 60 * self.s.checkpoint_minutes)
                if due and self.step < self.s.steps:
                    self._check_finite(window)  # never save weights after a non-finite loss
                    self.elapsed = time.monotonic() - t0
                    self.save_checkpoint()
                    t_last_ckpt = time.monotonic()
            bar.close()
            self.elapsed = time.monotonic() - t0
            self._validate()
            card = self.export() if self.dist.main else dict(self.card)
            self.save_checkpoint()
        finally:
            prefetch.shutdown(wait=True, cancel_futures=True)
            self.wait_for_checkpoint()
        self.dist.close()
        return card
