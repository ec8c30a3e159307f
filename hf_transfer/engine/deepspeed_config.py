"""DeepSpeed for a run: a ZeRO-2 or ZeRO-3 config generated from the run's own settings.

Precision, micro-batch size, accumulation and clipping come from `training`, so a user needs no
DeepSpeed JSON of their own; the optimizer and scheduler stay hf_transfer's. The `deepspeed`
package is optional: asking for it without the package is a `ConfigError` that says what to do.
"""

from __future__ import annotations

from typing import Any

from hf_transfer.errors import ConfigError


def uses_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def deepspeed_config(training, num_processes: int | None = None) -> dict[str, Any]:
    """A DeepSpeed ZeRO-2 or ZeRO-3 config from the run's settings.

    Precision (`bf16` / `fp16` with dynamic loss scaling), micro-batch size, gradient accumulation
    and clipping come from `training`; bucket sizes are left `auto` for Accelerate to fill in from
    the model's hidden size. The optimizer and scheduler stay hf_transfer's (AdamW with
    per-group learning rates), so the config holds none.
    """
    stage = int(training.deepspeed_zero_stage)
    if stage not in (2, 3):
        raise ConfigError(f"training.deepspeed_zero_stage must be 2 or 3, got {stage}.")
    mp = training.mixed_precision
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 2:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True})
    else:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                "stage3_max_live_parameters": 1e9,
                "stage3_max_reuse_distance": 1e9,
                # The run folder needs full weights: gather them at save time.
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": training.batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "gradient_clipping": float(training.max_grad_norm) if training.max_grad_norm else 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": mp == "bf16"},
        "fp16": {
            "enabled": mp == "fp16",
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if num_processes:
        config["train_batch_size"] = training.batch_size * training.gradient_accumulation_steps * num_processes
    return config


def deepspeed_plugin(training):
    """Accelerate's DeepSpeed plugin for the generated config; a clear error without `deepspeed`."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            "training.distributed=deepspeed needs the deepspeed package (`pip install deepspeed`, on a "
            "machine with CUDA and a CUDA build of torch). Or use training.distributed=fsdp, which "
            "needs nothing beyond torch."
        )
    from accelerate import DeepSpeedPlugin

    return DeepSpeedPlugin(hf_ds_config=deepspeed_config(training))
