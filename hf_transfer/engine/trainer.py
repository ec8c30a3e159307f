"""The training loop: one Accelerate loop shared by every recipe.

Read top to bottom: build the optimizer from the strategy's layer groups, `accelerator.prepare`,
then per optimizer step: fetch the accumulation window, backward each micro-batch, clip, step.
Evaluation gathers predictions with `gather_for_metrics`. Checkpoints hold everything a resumed run
needs to continue exactly (model, optimizer, scheduler, RNG, data position, strategy schedule).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import ProjectConfiguration
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from hf_transfer.config import TrainingConfig
from hf_transfer.engine.budget import resolve_budget, resolve_learning_rate
from hf_transfer.engine.checkpoints import Checkpoints, TrainerState
from hf_transfer.engine.distributed import precision_that_ran as dist_precision
from hf_transfer.engine.evaluation import recalibrate_batchnorm, run_evaluation
from hf_transfer.engine.optim import build_param_groups, new_adamw
from hf_transfer.errors import HFTransferError, TrainingError
from hf_transfer.models.families import model_type_of
from hf_transfer.quiet import progress_disabled

# Accelerate's logger: records from the main process only (unless main_process_only=False), so a
# multi-process run logs each step once.
logger = get_logger(__name__)

LOWER_IS_BETTER = ("loss", "wer", "cer", "rmse", "mae", "mse", "hamming_loss")


def new_accelerator(
    training: TrainingConfig, output_dir: Path, find_unused_parameters: bool = False, groups: list | None = None
) -> Accelerator:
    """An Accelerator for this run (mixed precision, trackers, DDP settings). With the model's layer
    groups (training), also `training.distributed`'s FSDP / DeepSpeed plugin and the precision
    check (`hf_transfer.engine.distributed`)."""
    from hf_transfer.engine.distributed import accelerator_plugins, finish_accelerator, with_resolved_precision

    tc = with_resolved_precision(training)  # unset: `no`; `auto`: by device (the Trainer resolves per strategy)

    # Accelerate keeps process-wide state; a second run in the same process (tests, sweeps) may
    # use another precision, so the non-distributed part is reset.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    trackers = [t for t in tc.report_to if t and t != "none"]
    plugins = accelerator_plugins(tc, groups) if groups is not None else {}
    acc = Accelerator(
        mixed_precision=tc.mixed_precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        kwargs_handlers=handlers,
        step_scheduler_with_optimizer=False,
        **plugins,
    )
    if groups is not None:
        finish_accelerator(acc, tc, plugins)
    return acc


def metric_key(name: str, prefix: str = "eval") -> str:
    return name if name.startswith(f"{prefix}_") else f"{prefix}_{name}"


def _is_better(value: float, best: float | None, name: str, threshold: float) -> bool:
    if best is None:
        return True
    if any(name.endswith(s) for s in LOWER_IS_BETTER):
        return value < best - threshold
    return value > best + threshold


class EngineHook:
    """Extra behaviour plugged into the training loop; the default does nothing.

    Domain adaptation uses it (`hf_transfer.domain`): DANN adds a domain classifier trained with
    the model, interleaves target batches with the source batches and adds the domain loss; AdaBN
    recomputes batch-norm statistics on target data once training ends. Keeping these behind one
    small interface keeps the loop below free of special cases.
    """

    #: Learning-rate multiplier for the parameters of `extra_modules`.
    lr_multiplier: float = 1.0

    def extra_modules(self) -> list[torch.nn.Module]:
        """Modules trained alongside the model (own optimizer group, prepared and checkpointed)."""
        return []

    def setup(self, trainer: Trainer, modules: list[torch.nn.Module]) -> None:
        """After `accelerator.prepare`; `modules` are the prepared `extra_modules`."""

    def on_epoch_start(self, trainer: Trainer, epoch: int, batches_done: int) -> None:
        """Start of an epoch (`batches_done` micro-batches of it already ran: a resumed run)."""

    def loss(self, trainer: Trainer, batch) -> torch.Tensor:
        """Summed training loss of one micro-batch (the engine divides by the item count)."""
        return trainer.task.loss(trainer.model, batch)

    def log_values(self, trainer: Trainer) -> dict[str, float]:
        """Extra values for the training log record (averaged since the last record)."""
        return {}

    def on_train_end(self, trainer: Trainer) -> None:
        """After the best weights are loaded, before the final evaluation and save."""


class Trainer:
    """Trains `model` on `train_dataset` with Accelerate.

    Args:
        training: The run's `training` settings.
        task: The recipe's task (loss, evaluation outputs, metrics).
        model: The model, already adapted by the strategy (frozen parts, PEFT wrapper).
        strategy: The transfer strategy (for epoch hooks and LR scales).
        groups: The model's layer groups.
        train_dataset: Preprocessed training dataset.
        eval_dataset: Preprocessed evaluation dataset, or None.
        collate_fn: Batch builder (dynamic padding).
        train_sampler: Sampler for the training data with `set_epoch` (seeded per epoch).
        output_dir: Run folder.
        hook: Extra behaviour in the loop (`EngineHook`), e.g. domain adaptation.

    Set-up runs in named steps, in this order: `_setup_accelerator`, `_setup_data`,
    `_setup_optimizer`, `_prepare`, `_setup_schedule`, `_setup_checkpoints`.
    """

    def __init__(
        self,
        training: TrainingConfig,
        task,
        model,
        strategy,
        groups,
        train_dataset,
        eval_dataset,
        collate_fn,
        train_sampler,
        output_dir,
        hook: EngineHook | None = None,
    ):
        from hf_transfer.engine.distributed import with_resolved_precision

        # `training.mixed_precision` unset or `auto`: the concrete precision for this strategy and device.
        self.tc = with_resolved_precision(training, strategy)
        self.task = task
        self.strategy = strategy
        self.groups = groups
        self.output_dir = Path(output_dir)
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.sampler = train_sampler
        self.collate_fn = collate_fn
        self.state = TrainerState()
        self.hook = hook if hook is not None else EngineHook()
        self._start: float | None = None
        self._samples_seen = 0

        self._setup_accelerator(model)
        train_dl, eval_dl = self._setup_data(train_dataset, eval_dataset)
        model_type = model_type_of(model)  # before Accelerate wraps it: convolutional nets get larger rates
        optimizer, extra_modules = self._setup_optimizer(model, model_type)
        self._prepare(model, optimizer, train_dl, eval_dl, extra_modules)
        self._setup_schedule(model_type)
        self._setup_checkpoints()

    # ------------------------------------------------------------------ set-up steps

    def _setup_accelerator(self, model) -> None:
        """The Accelerator (with `training.distributed`'s plugin), and gradient checkpointing
        (non-reentrant; FSDP's own under FSDP) switched on before the model is wrapped."""
        from hf_transfer.engine import distributed as dist

        dynamic = self.strategy.changes_trainable_set
        self.accelerator = new_accelerator(self.tc, self.output_dir, find_unused_parameters=dynamic, groups=self.groups)
        self.gradient_checkpointing = dist.prepare_model(self.accelerator, self.tc, model, dynamic)
        self._deepspeed = dist.uses_deepspeed(self.accelerator)

    def _setup_data(self, train_dataset, eval_dataset) -> tuple[DataLoader, DataLoader | None]:
        """The training and evaluation loaders (not prepared yet)."""
        tc = self.tc
        train_dl = DataLoader(
            train_dataset,
            batch_size=tc.batch_size,
            sampler=self.sampler,
            collate_fn=self.collate_fn,
            num_workers=tc.num_workers,
            # Each new DataLoader iterator draws a seed from this generator; without one it would
            # draw from the global RNG and shift dropout after a resume.
            generator=torch.Generator().manual_seed(tc.seed),
        )
        eval_dl = None
        if eval_dataset is not None:
            eval_dl = DataLoader(
                eval_dataset,
                batch_size=tc.eval_batch_size or tc.batch_size,
                shuffle=False,
                collate_fn=self.collate_fn,
                num_workers=tc.num_workers,
                generator=torch.Generator().manual_seed(tc.seed),
            )
        return train_dl, eval_dl

    def _setup_optimizer(self, model, model_type) -> tuple[torch.optim.Optimizer, list[torch.nn.Module]]:
        """AdamW over the strategy's layer-wise groups, the hook's modules first. Returns the
        optimizer and the hook's modules (not prepared yet)."""
        from hf_transfer.engine import distributed as dist

        tc, hook = self.tc, self.hook
        scales = self.strategy.lr_scales(self.groups)
        lr, _ = resolve_learning_rate(tc, self.strategy, model_type)
        param_groups = build_param_groups(model, self.groups, scales, lr, tc.weight_decay)
        extra_modules = hook.extra_modules()
        # First, so the last group stays the model's head (the learning rate the log reports).
        param_groups[:0] = [
            {
                "params": list(module.parameters()),
                "weight_decay": tc.weight_decay,
                "lr": lr * hook.lr_multiplier,
                "lr_scale": hook.lr_multiplier,
                "name": f"hook.{i}",
            }
            for i, module in enumerate(extra_modules)
        ]
        # Fused AdamW where torch has it (the transformers Trainer's default too); ZeRO and FSDP keep
        # torch's default implementation.
        plain = self._deepspeed or dist.uses_fsdp(self.accelerator)
        return new_adamw(param_groups, lr, "default" if plain else "auto"), extra_modules

    def _prepare(self, model, optimizer, train_dl, eval_dl, extra_modules) -> None:
        """`accelerator.prepare` for the model, optimizer, loaders and the hook's modules; then the
        hook's `setup`."""
        acc = self.accelerator
        if self.strategy.changes_trainable_set and acc.num_processes > 1:
            # DDP only all-reduces parameters that require grad when it wraps the model. Wrap it
            # with every parameter the schedule will ever unfreeze marked trainable, then restore
            # the current freezing; find_unused_parameters lets frozen ones skip a step safely.
            flags = {n: p.requires_grad for n, p in model.named_parameters()}
            for p in model.parameters():
                p.requires_grad_(True)
            model, optimizer, train_dl = acc.prepare(model, optimizer, train_dl)
            for n, p in acc.unwrap_model(model).named_parameters():
                p.requires_grad_(flags[n])
        else:
            model, optimizer, train_dl = acc.prepare(model, optimizer, train_dl)
        self.eval_dl = acc.prepare(eval_dl) if eval_dl is not None else None
        extra_modules = [acc.prepare(m) for m in extra_modules]
        self._hook_params = [p for m in extra_modules for p in m.parameters()]
        self.model, self.optimizer, self.train_dl = model, optimizer, train_dl
        self.hook.setup(self, extra_modules)

    def _setup_schedule(self, model_type) -> None:
        """Learning rate, steps and warm-up from the settings, or derived from the data size and
        the strategy where unset (`hf_transfer.engine.budget`; recorded in metrics.json), and the
        learning-rate scheduler."""
        tc = self.tc
        self.steps_per_epoch = max(1, math.ceil(len(self.train_dl) / tc.gradient_accumulation_steps))
        labels = getattr(getattr(self.task, "labels", None), "id2label", None)
        self.budget = resolve_budget(
            tc,
            self.strategy,
            self.steps_per_epoch,
            model_type,
            num_classes=len(labels) if isinstance(labels, dict) and labels else None,
        )
        self.total_steps = self.budget.total_steps
        self.num_epochs = self.budget.epochs
        self.scheduler = get_scheduler(
            tc.scheduler,
            optimizer=self.optimizer,
            num_warmup_steps=self.budget.warmup_steps,
            num_training_steps=self.total_steps,
        )
        self.accelerator.register_for_checkpointing(self.scheduler)

    def _setup_checkpoints(self) -> None:
        self.checkpoints = Checkpoints(
            self.accelerator, self.ckpt_dir, self.tc.save_total_limit, self.check_weights_finite
        )

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, dataloader=None, prefix: str = "eval") -> dict[str, Any]:
        """Metrics on `dataloader` (the eval split by default), keys prefixed Trainer-style."""
        dataloader = dataloader if dataloader is not None else self.eval_dl
        return run_evaluation(self.accelerator, self.model, dataloader, self.task, prefix)

    # ------------------------------------------------------------------ checkpoints

    def _elapsed(self) -> float:
        """Training seconds of this process so far (0 before `train` starts)."""
        return time.time() - self._start if self._start else 0.0

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint of this step (`engine.checkpoints.Checkpoints.save`)."""
        return self.checkpoints.save(self.state, self.strategy, self._elapsed)

    def load_checkpoint(self, path: Path) -> None:
        self.state = self.checkpoints.load(
            path, model=self.model, optimizer=self.optimizer, strategy=self.strategy, groups=self.groups
        )

    def _load_best(self) -> None:
        if self.checkpoints.load_best(self.model):
            logger.info(
                "Loaded the best model (step %s, %s=%.4f).",
                self.state.best_step,
                self.tc.metric_for_best_model,
                self.state.best_metric,
            )

    # ------------------------------------------------------------------ training

    def _log(self, record: dict) -> None:
        self.state.history.append(record)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        self.accelerator.log(scalars, step=record.get("step"))

    def _window(self, iterator) -> list:
        batches = []
        for _ in range(self.tc.gradient_accumulation_steps):
            try:
                batches.append(next(iterator))
            except StopIteration:
                break
        return batches

    def _optimizer_step(self, window: list) -> float:
        """Backward over one accumulation window and step. Returns the window's mean loss."""
        acc, model = self.accelerator, self.model
        # Loss is summed per example and divided by the number of examples in the whole window
        # across processes, so every example weighs the same whatever the batch sizes (a short
        # last batch, uneven shards). DDP averages gradients over processes, hence * num_processes.
        n_local = sum(self.task.num_items(b) for b in window)
        n_total = float(n_local)
        if acc.num_processes > 1:
            n_total = acc.reduce(torch.tensor(n_total, device=acc.device), reduction="sum").item()
        loss_total = 0.0
        for i, batch in enumerate(window):
            last = i == len(window) - 1
            ctx = contextlib.nullcontext() if last or self._deepspeed else acc.no_sync(model)
            if self._deepspeed:
                # DeepSpeed steps at the boundary Accelerate tells it, and divides the loss by its
                # accumulation steps, which this window's normalisation already did.
                acc.gradient_state._set_sync_gradients(last)
            with ctx:
                loss_sum = self.hook.loss(self, batch)
                scale = self.tc.gradient_accumulation_steps if self._deepspeed else 1
                acc.backward(loss_sum * (acc.num_processes * scale) / max(n_total, 1.0))
            loss_total += loss_sum.detach().float()
        if self.tc.max_grad_norm and self.tc.max_grad_norm > 0:
            acc.clip_grad_norm_(self._trainable, self.tc.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if acc.num_processes > 1:
            loss_total = acc.reduce(torch.as_tensor(loss_total, device=acc.device).reshape(1), reduction="sum")
        return float(loss_total) / max(n_total, 1.0)

    # ------------------------------------------------------------------ divergence

    def _diverged(self, what: str) -> TrainingError:
        """The error for a run whose loss or weights stopped being finite, naming the step and the
        learning rate (the usual cause) with where it came from."""
        b = self.budget
        hint = (
            f"The likely cause is a learning rate too high for this model and strategy: {b.learning_rate:g} "
            f"({b.sources.get('learning_rate', 'training.learning_rate')}). Lower training.learning_rate "
            "(ten times lower, say) and start the run again (--overwrite)"
        )
        if self.tc.mixed_precision == "fp16":
            hint += ", or train without training.mixed_precision=fp16 (float16 overflows)"
        return TrainingError(f"Training diverged at step {self.state.global_step}: {what}. {hint}.")

    def _check_finite(self, value: float, what: str) -> None:
        if not math.isfinite(value):
            raise self._diverged(f"{what} is {value}")

    def check_weights_finite(self) -> None:
        """Raise `TrainingError` when a trainable weight is NaN or infinite (before any weights are
        written: a checkpoint, the best model, the run's model)."""
        params = getattr(self, "_trainable", None) or [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            return
        acc = self.accelerator
        with torch.no_grad():
            bad = torch.stack([(~torch.isfinite(p.detach())).any() for p in params]).any().float().reshape(1)
        if acc.num_processes > 1:  # FSDP / ZeRO shards: every process must take the same branch
            bad = acc.reduce(bad.to(acc.device), reduction="sum")
        if float(bad.sum()) > 0:
            raise self._diverged("some weights are no longer finite numbers (NaN or infinite)")

    def _after_eval(self, metrics: dict) -> bool:
        """Track the best model and early stopping. True when training should stop."""
        name = metric_key(self.tc.metric_for_best_model)
        if name not in metrics:
            raise HFTransferError(
                f"training.metric_for_best_model='{self.tc.metric_for_best_model}' is not among the "
                f"evaluation metrics ({', '.join(sorted(k for k in metrics if not k.endswith('matrix')))})."
            )
        value = float(metrics[name])
        if _is_better(value, self.state.best_metric, name, self.tc.early_stopping_threshold):
            self.state.best_metric = value
            self.state.best_step = self.state.global_step
            self.state.evals_without_improvement = 0
            if self.tc.load_best_model_at_end:
                self.checkpoints.save_best(self.model)
        else:
            self.state.evals_without_improvement += 1
        patience = self.tc.early_stopping_patience
        if patience and self.state.evals_without_improvement >= patience:
            logger.info(
                "Early stopping: %s has not improved for %d evaluations (best %.4f at step %s).",
                name,
                patience,
                self.state.best_metric,
                self.state.best_step,
            )
            self.state.stopped_early = True
            return True
        return False

    def train(self) -> dict[str, Any]:
        """Run training. Returns the final metrics (eval_*, train_runtime, ...)."""
        self._begin()
        start = self._start = time.time()
        self._samples_seen = 0
        progress = tqdm(
            total=self.total_steps,
            initial=self.state.global_step,
            desc="Training",
            disable=not self.accelerator.is_local_main_process or progress_disabled(),
        )
        self.model.train()
        try:
            while self.state.global_step < self.total_steps and not self.state.stopped_early:
                self._run_epoch(self.state.epoch, progress)
        except (Exception, KeyboardInterrupt) as e:
            self._stopped(e)
            raise
        finally:
            progress.close()
        runtime = time.time() - start
        self._finish()
        metrics = self._final_metrics(runtime)
        # Close the trackers only: `end_training` would also tear down the process group, which
        # the caller still needs for the test split and the final save.
        for tracker in self.accelerator.trackers:
            tracker.finish()
        return metrics

    def _begin(self) -> None:
        """Trackers, then the resumed checkpoint or the strategy's epoch-0 freezing."""
        acc, tc = self.accelerator, self.tc
        if tc.report_to:
            acc.init_trackers("hf_transfer", config={"strategy": self.strategy.name, "lr": self.budget.learning_rate})
        if tc.resume_from_checkpoint:
            self.load_checkpoint(self.checkpoints.resolve(tc.resume_from_checkpoint))
        else:
            self.strategy.on_epoch_start(0, acc.unwrap_model(self.model), self.groups)

    def _run_epoch(self, epoch: int, progress) -> None:
        """One epoch (the rest of it, for a resumed run): optimizer steps until the data or the
        step budget runs out, or early stopping; then the epoch's evaluation and checkpoint."""
        iterator = self._start_epoch(epoch)
        while self.state.global_step < self.total_steps:
            window = self._window(iterator)
            if not window:
                break
            if self._train_step(window, epoch, progress):
                break
        self._end_epoch(epoch)

    def _start_epoch(self, epoch: int):
        """The strategy's schedule, the epoch's data order, the batches a resumed run already saw
        skipped. Returns the iterator over the epoch's batches."""
        acc = self.accelerator
        if self.state.step_in_epoch == 0 and epoch > 0:
            if self.strategy.on_epoch_start(epoch, acc.unwrap_model(self.model), self.groups):
                logger.info("Epoch %d: %s", epoch, self.strategy.describe(acc.unwrap_model(self.model)))
        self._trainable = [p for p in self.model.parameters() if p.requires_grad] + self._hook_params
        # Accelerate's loader re-seeds its sampler from its own iteration counter each time it is
        # iterated; set that counter too, so a resumed run draws this epoch's order.
        self.sampler.set_epoch(epoch)
        if hasattr(self.train_dl, "set_epoch"):
            self.train_dl.set_epoch(epoch)
        dl = self.train_dl
        skip = self.state.step_in_epoch * self.tc.gradient_accumulation_steps
        self.hook.on_epoch_start(self, epoch, skip)
        if skip:
            dl = acc.skip_first_batches(dl, skip)
        return iter(dl)

    def _train_step(self, window: list, epoch: int, progress) -> bool:
        """One optimizer step over `window`, then its log record, evaluation and checkpoint as
        due. True when early stopping ends the epoch (and training)."""
        tc = self.tc
        loss = self._optimizer_step(window)
        self._samples_seen += sum(self.task.num_examples(b) for b in window) * self.accelerator.num_processes
        self.state.global_step += 1
        self._check_finite(loss, "the training loss")
        self.state.step_in_epoch += 1
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.4f}", refresh=False)
        step = self.state.global_step
        if step % max(1, tc.logging_steps) == 0 or step == 1:
            self._log(
                {
                    "step": step,
                    "epoch": self._epoch_progress(epoch),
                    "loss": loss,
                    "learning_rate": self.scheduler.get_last_lr()[-1],
                    **self.hook.log_values(self),
                }
            )
        if self.eval_dl is not None and tc.eval_strategy == "steps" and step % tc.eval_steps == 0:
            if self._evaluate_and_log(epoch):
                return True
        if tc.save_strategy == "steps" and step % tc.save_steps == 0:
            self.save_checkpoint()
        return False

    def _end_epoch(self, epoch: int) -> None:
        """The epoch's evaluation and checkpoint (every `budget.epochs_per_eval`-th epoch and the
        last), and the move to the next epoch."""
        tc, st = self.tc, self.state
        finished_epoch = st.step_in_epoch >= self.steps_per_epoch or st.global_step >= self.total_steps
        # Epochs raised to reach min_steps: evaluate / checkpoint every k-th epoch and the last.
        due = (epoch + 1) % self.budget.epochs_per_eval == 0 or st.global_step >= self.total_steps
        if not st.stopped_early and self.eval_dl is not None and tc.eval_strategy == "epoch" and finished_epoch and due:
            self._evaluate_and_log(epoch)
        st.epoch += 1
        st.step_in_epoch = 0
        if tc.save_strategy == "epoch" and due and st.global_step < self.total_steps and not st.stopped_early:
            self.save_checkpoint()

    def _epoch_progress(self, epoch: int) -> float:
        return epoch + self.state.step_in_epoch / self.steps_per_epoch

    def _finish(self) -> None:
        """After the last step: the best weights back, batch-norm statistics recalibrated, the
        hook's end."""
        if self.eval_dl is not None and self.tc.load_best_model_at_end and self.state.best_step is not None:
            self._load_best()
        if self.tc.recalibrate_batchnorm:
            self.sampler.set_epoch(self.state.epoch)
            n = recalibrate_batchnorm(
                self.unwrapped_model(), self.train_dl, lambda batch: self.task.loss(self.model, batch), self.accelerator
            )
            logger.info("Recalibrated the running statistics of %d batch-norm layers over the training data.", n)
        self.hook.on_train_end(self)

    def _final_metrics(self, runtime: float) -> dict[str, Any]:
        """The final evaluation (the weights checked finite before the caller writes them) and the
        run's facts."""
        acc = self.accelerator
        metrics: dict[str, Any] = {}
        try:
            if self.eval_dl is not None:
                metrics.update(self.evaluate())
                self._check_eval_finite(metrics)
            self.check_weights_finite()  # the run's model is written next: never a NaN one
        except TrainingError as e:
            self._stopped(e)
        metrics.update(
            {
                # A resumed run: total over every process that trained it (up to the checkpoint each
                # stopped at), and this process's part (what the throughput below is measured on).
                "train_runtime": round(self.state.train_runtime + runtime, 3),
                "train_runtime_this_process": round(runtime, 3),
                "train_samples_per_second": round(self._samples_seen / runtime, 3) if runtime > 0 else 0.0,
                "train_steps": self.state.global_step,
                "mixed_precision": dist_precision(acc),
                "gradient_checkpointing": self.gradient_checkpointing,
                "distributed": acc.distributed_type.value,
                "budget": self.budget.as_dict(),
                "epoch": self.state.epoch,
            }
        )
        if self.state.best_step is not None:
            metrics["best_step"] = self.state.best_step
        if self.state.stopped_early:
            metrics["stopped_early"] = True
        return metrics

    def _stopped(self, e: BaseException) -> None:
        """Log why training stopped and what is left; a user error is raised again with that added."""
        found = self.checkpoints.found()
        if isinstance(e, TrainingError):
            # Resuming would diverge again (the checkpoint restores the learning rate too).
            where = (
                f"The last checkpoint, '{found[-1]}', holds finite weights and is kept. "
                if found
                else "No checkpoint was saved before it. "
            ) + "No model was written as a finished run."
        else:
            where = (
                (
                    f"The last checkpoint, '{found[-1]}', is intact. Resume with the same command plus "
                    "training.resume_from_checkpoint=latest."
                )
                if found
                else "No checkpoint was saved yet."
            )
        logger.error(
            "Training stopped at step %d by %s: %s. %s",
            self.state.global_step,
            type(e).__name__,
            str(e).rstrip("."),
            where,
            main_process_only=False,
        )
        if isinstance(e, HFTransferError):
            raise type(e)(f"{e} {where}") from e

    def _check_eval_finite(self, metrics: dict) -> None:
        for key in ("eval_loss", metric_key(self.tc.metric_for_best_model)):
            value = metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._check_finite(float(value), f"the evaluation's {key[5:]}")

    def _evaluate_and_log(self, epoch: int) -> bool:
        metrics = self.evaluate()
        self._check_eval_finite(metrics)
        record = {"step": self.state.global_step, "epoch": self._epoch_progress(epoch)}
        record.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        self._log(record)
        summary = ", ".join(
            f"{k}={v:.4f}"
            for k, v in record.items()
            if k.startswith("eval_") and isinstance(v, float) and "_" not in k[5:]
        )
        logger.info("Step %d: %s", self.state.global_step, summary)
        return self._after_eval(metrics)

    def unwrapped_model(self):
        return self.accelerator.unwrap_model(self.model)
