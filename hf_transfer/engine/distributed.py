"""Scale-out and memory: the pieces of a run that depend on how many devices it uses.

hf_transfer does not have its own distributed engine. It drives the ones users already run,
Accelerate's DDP, FSDP and DeepSpeed plugins (launched by `accelerate launch` or `torchrun`, on
one machine or several), and keeps the transfer strategies correct under them:

* **Gradient checkpointing** (`training.gradient_checkpointing`) uses transformers' own switch
  with the *non-reentrant* implementation. The reentrant one silently drops the gradients of a
  checkpointed block whose input does not require grad, which is every block above a frozen
  prefix (`partial`, `freeze`, `gradual_unfreeze`, PEFT adapters; transformers #21381, #16276).
  Non-reentrant checkpointing needs no input gradients, so the hooks transformers adds to make
  the embeddings' output require grad are removed again: they would make backward run through
  the frozen prefix for nothing. Only a remote-code model on the old (reentrant-only) interface
  keeps them. A network with nothing trainable (`feature_extraction`) skips checkpointing.
* **FSDP** (`training.distributed: fsdp`): Accelerate's `FullyShardedDataParallelPlugin` with
  `use_orig_params=True` (frozen and trainable parameters may share a flat parameter; pytorch
  #104690, peft #1702) and one FSDP unit per transformer block (the classes of the model's
  "block" layer groups). Checkpoints are sharded (`torch.distributed.checkpoint`) or full
  (`training.fsdp_state_dict_type`); the run folder gets full weights either way. Under FSDP,
  gradient checkpointing is FSDP's activation checkpointing on the same blocks. Code: `engine.fsdp`.
* **DeepSpeed** (`training.distributed: deepspeed`): a ZeRO-2 or ZeRO-3 config generated from the
  run's settings (`deepspeed_config`, in `engine.deepspeed_config`). The `deepspeed` package is
  optional.
* **Mixed precision**: `fp16` needs a GPU (Accelerate silently runs fp32 on CPU); `bf16` on CPU runs
  under `torch.autocast`; unset or `auto` resolves to a concrete precision per strategy and device
  (`resolve_mixed_precision`). `precision_that_ran` is what `metrics.json` and the card record.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn

from hf_transfer.engine.deepspeed_config import deepspeed_config, deepspeed_plugin, uses_deepspeed  # noqa: F401
from hf_transfer.engine.fsdp import (  # noqa: F401
    block_class_names,
    enable_fsdp_on_cpu,
    final_model,
    fsdp_plugin,
    gather_state_dict,
    load_full_state_dict,
    prime_optimizer_for_resume,
    set_distributed_type,
    uses_fsdp,
)
from hf_transfer.errors import ConfigError

__all__ = [
    "DISTRIBUTED",
    "accelerate_command",
    "accelerator_plugins",
    "block_class_names",
    "check_mixed_precision",
    "native_bf16",
    "resolve_mixed_precision",
    "with_resolved_precision",
    "deepspeed_config",
    "deepspeed_plugin",
    "enable_fsdp_on_cpu",
    "enable_gradient_checkpointing",
    "final_model",
    "finish_accelerator",
    "fsdp_plugin",
    "gather_state_dict",
    "launch_with_accelerate",
    "load_full_state_dict",
    "precision_that_ran",
    "prepare_model",
    "prime_optimizer_for_resume",
    "remove_input_grad_hooks",
    "set_distributed_type",
    "transformers_model",
    "uses_deepspeed",
    "uses_fsdp",
]

logger = logging.getLogger(__name__)

DISTRIBUTED = ("auto", "ddp", "fsdp", "deepspeed")


# ----------------------------------------------------------------------------------------------
# Gradient checkpointing


def transformers_model(model: nn.Module):
    """The outermost transformers `PreTrainedModel` inside `model` (under PEFT, Accelerate or
    prefix-cache wrappers), or None."""
    from transformers import PreTrainedModel

    for m in model.modules():
        if isinstance(m, PreTrainedModel):
            return m
    return None


def _old_checkpointing_interface(model) -> bool:
    # Remote-code models written for transformers < 4.35 take `value=` and ignore our kwargs
    # (transformers then runs the reentrant implementation).
    return "value" in inspect.signature(model._set_gradient_checkpointing).parameters


def enable_gradient_checkpointing(model: nn.Module, may_unfreeze_later: bool = False) -> str:
    """Turn on non-reentrant gradient checkpointing on every block of `model`.

    Args:
        model: The model to train, possibly wrapped (PEFT, prefix cache).
        may_unfreeze_later: The strategy unfreezes parameters during training (`gradual_unfreeze`,
            `lp_ft`), so a model frozen now still needs checkpointing.

    Returns:
        What was done, for the log and `metrics.json` (`on`, or `off (...)` with the reason).

    Raises:
        ConfigError: The architecture has no gradient checkpointing.
    """
    if not may_unfreeze_later and not any(p.requires_grad for p in model.parameters()):
        return "off (nothing in the network trains)"
    base = transformers_model(model)
    if base is None or not getattr(base, "supports_gradient_checkpointing", False):
        name = type(base or model).__name__
        raise ConfigError(
            f"training.gradient_checkpointing=true, but {name} does not support gradient checkpointing "
            "in transformers. Set training.gradient_checkpointing=false, or lower training.batch_size "
            "and raise training.gradient_accumulation_steps to save memory instead."
        )
    kwargs = {"use_reentrant": False}
    # transformers 5 renamed gradient_checkpointing_enable to activation_checkpointing_enable (the
    # old name still works, with a FutureWarning).
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if _old_checkpointing_interface(base):
        # Reentrant checkpointing: a block's parameters only get gradients if its input requires grad.
        base.enable_input_require_grads()
        return "on (reentrant: the model's remote code ignores use_reentrant; input grads enabled)"
    remove_input_grad_hooks(base)
    return "on"


def remove_input_grad_hooks(model) -> int:
    """Remove the forward hooks `enable_input_require_grads` put on the input embeddings.

    transformers' `disable_input_require_grads` re-adds them in 5.x, so the handles are removed here.
    """
    hooks = list(getattr(model, "_require_grads_hooks", None) or [])
    single = getattr(model, "_require_grads_hook", None)
    if single is not None and single not in hooks:
        hooks.append(single)
    for h in hooks:
        h.remove()
    model._require_grads_hooks = []
    if hasattr(model, "_require_grads_hook"):
        del model._require_grads_hook
    return len(hooks)


# ----------------------------------------------------------------------------------------------
# Mixed precision


def _cpu_forced() -> bool:
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_CPU")


def check_mixed_precision(requested: str, device_type: str | None = None) -> None:
    """`fp16` without a GPU is an error: Accelerate would silently train in fp32 on CPU.

    Args:
        requested: `training.mixed_precision`.
        device_type: The device training runs on; None to work it out (CUDA unless absent or
            `ACCELERATE_USE_CPU`).
    """
    if requested != "fp16":
        return
    if (device_type or training_device_type()) == "cpu":
        raise ConfigError(
            "training.mixed_precision=fp16 needs a GPU, and this run trains on the CPU (fp16 autocast "
            "and loss scaling are GPU features; Accelerate would silently run in fp32). Use "
            "training.mixed_precision=bf16 (runs under autocast on CPU) or training.mixed_precision=no."
        )


def training_device_type() -> str:
    """The device a run trains on when Accelerate picks it: `cuda` (or `xpu`) unless there is none
    or `ACCELERATE_USE_CPU` is set, else `cpu`."""
    if _cpu_forced():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    return "cpu"


def native_bf16(device_type: str) -> bool:
    """Whether `device_type` computes bf16 matrix products in hardware: a CUDA GPU with bf16
    (Ampere or later; not emulated), a CPU with AMX or AVX512-BF16 (oneDNN's fast bf16 paths)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def resolve_mixed_precision(requested: str | None, strategy=None, device_type: str | None = None) -> str:
    """The precision a run trains in: `no`, `fp16` or `bf16`.

    Args:
        requested: `training.mixed_precision`; None takes the strategy's `default_mixed_precision`
            (`no` without a strategy).
        strategy: The run's strategy, for its default.
        device_type: The training device; None to work it out (`training_device_type`).

    `auto` is bf16 where the device computes it natively (`native_bf16`), `no` elsewhere.
    """
    if requested is None:
        requested = getattr(strategy, "default_mixed_precision", None) or "no"
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(device_type or training_device_type()) else "no"


def with_resolved_precision(training, strategy=None):
    """A copy of `training` whose `mixed_precision` is concrete (`resolve_mixed_precision`)."""
    import copy

    resolved = copy.copy(training)
    resolved.mixed_precision = resolve_mixed_precision(training.mixed_precision, strategy)
    return resolved


def precision_that_ran(accelerator) -> str:
    """The precision the forward passes really ran in: `fp16`, `bf16` or `no`."""
    from accelerate.utils import DistributedType

    mp = str(accelerator.mixed_precision)
    if mp not in ("fp16", "bf16"):
        return "no"
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return mp  # DeepSpeed casts the model itself
    return mp if accelerator.native_amp else "no"


# ----------------------------------------------------------------------------------------------
# One entry point for the engine


def accelerator_plugins(training, groups: list | None) -> dict[str, Any]:
    """Keyword arguments for `Accelerator(...)` that `training.distributed` asks for."""
    mode = getattr(training, "distributed", "auto")
    if mode == "fsdp":
        return {"fsdp_plugin": fsdp_plugin(training, groups or [])}
    if mode == "deepspeed":
        return {"deepspeed_plugin": deepspeed_plugin(training)}
    return {}


def finish_accelerator(accelerator, training, plugins: dict) -> None:
    """After the Accelerator exists: FSDP on CPU, the precision check, and the warnings."""
    if "fsdp_plugin" in plugins:
        import warnings

        # torch 2.13 deprecates the FSDP1 state-dict APIs Accelerate's FSDP1 checkpointing calls, once
        # per FSDP unit and process: nothing a user of this run can act on.
        for text in (
            "FSDP.state_dict_type",
            "Please use DTensor",
            "`_get_pg_default_device`",
            "Multiple backends are registered",
        ):
            warnings.filterwarnings("ignore", message=f".*{text}", module="torch.distributed.fsdp")
    if "fsdp_plugin" in plugins and enable_fsdp_on_cpu(accelerator, plugins["fsdp_plugin"]):
        logger.info("FSDP on %d CPU processes (gloo).", accelerator.num_processes)
    elif (
        "fsdp_plugin" not in plugins
        and accelerator.device.type == "cpu"
        and uses_fsdp(accelerator)
        and getattr(accelerator.state, "fsdp_plugin", None) is None
    ):
        # An earlier FSDP run in this CPU process left PartialState saying FSDP: back to DDP.
        from accelerate.utils import DistributedType

        set_distributed_type(accelerator.state, DistributedType.MULTI_CPU)
    if getattr(training, "distributed", "auto") == "fsdp" and accelerator.num_processes == 1:
        logger.info("training.distributed=fsdp with one process: nothing to shard, training as usual.")
    check_mixed_precision(training.mixed_precision, accelerator.device.type)


def prepare_model(accelerator, training, model: nn.Module, may_unfreeze_later: bool) -> str:
    """Before `accelerator.prepare`: gradient checkpointing as the run asks. Returns what was done."""
    if uses_fsdp(accelerator) and may_unfreeze_later:
        raise ConfigError(
            "Strategies that unfreeze parameters during training (gradual_unfreeze, lp_ft) are not "
            "supported with training.distributed=fsdp: FSDP builds its flat parameters and gradient "
            "reduction from the trainable set when it wraps the model. Use training.distributed=ddp "
            "(the engine then wraps with every parameter the schedule will unfreeze)."
        )
    if not training.gradient_checkpointing:
        return "off"
    if uses_fsdp(accelerator):
        return "on (FSDP activation checkpointing, one unit per block, non-reentrant)"
    return enable_gradient_checkpointing(model, may_unfreeze_later)


# ----------------------------------------------------------------------------------------------
# `hf-transfer train CONFIG --accelerate-config FILE`


def accelerate_command(
    accelerate_config, config: str, overrides: list[str], extra: list[str] = (), devices: int | None = None
) -> tuple[list[str], list[str]]:
    """The `accelerate launch` command that runs `hf-transfer train` under an accelerate config
    file, and notes on it (such as asking for more processes than the machine has devices).

    Returns:
        (command, notes)
    """
    import sys
    from pathlib import Path

    from hf_transfer.config_parsing import read_yaml

    path = Path(accelerate_config)
    conf = read_yaml(
        path,
        "--accelerate-config",
        "Shipped ones: recipes/accelerate/*.yaml (single_gpu, "
        "multi_gpu, fsdp, deepspeed_zero2, deepspeed_zero3, multi_node, cpu_2proc).",
    )
    if devices is None:
        devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    notes = []
    wanted = int(conf.get("num_processes") or 1) // max(1, int(conf.get("num_machines") or 1))
    on_cpu = bool(conf.get("use_cpu")) or conf.get("distributed_type") == "MULTI_CPU" or _cpu_forced()
    if not on_cpu and wanted > max(devices, 1):
        where = "no GPU" if devices == 0 else f"{devices} GPU(s)"
        notes.append(
            f"{path.name} asks for {wanted} processes per machine, and this machine has {where}. "
            + (
                "Without GPUs that does not give several processes: run one (no --accelerate-config), or "
                "several CPU processes with ACCELERATE_USE_CPU=1 and recipes/accelerate/cpu_2proc.yaml."
                if devices == 0
                else f"Set num_processes to {devices} or fewer."
            )
        )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(path),
        "-m",
        "hf_transfer",
        "train",
        *extra,
        config,
        *overrides,
    ]
    return cmd, notes


def launch_with_accelerate(args) -> int:
    """Run `hf-transfer train` under `accelerate launch --config_file` (the CLI's `--accelerate-config`)."""
    import subprocess
    import sys

    from hf_transfer.config import load_config

    load_config(args.config_path, args.overrides)  # a bad config fails here, not on every process
    extra = ["--overwrite"] if getattr(args, "overwrite", False) else []
    cmd, notes = accelerate_command(args.accelerate_config, args.config, args.overrides, extra)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print("+ " + " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd)
