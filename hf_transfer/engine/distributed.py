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
  gradient checkpointing is FSDP's activation checkpointing on the same blocks.
* **DeepSpeed** (`training.distributed: deepspeed`): a ZeRO-2 or ZeRO-3 config generated from the
  run's settings (`deepspeed_config`). The `deepspeed` package is optional.
* **Mixed precision**: `fp16` needs a GPU (Accelerate silently runs fp32 on CPU); `bf16` on CPU runs
  under `torch.autocast`. `precision_that_ran` is what `metrics.json` and the card record.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn

from hf_transfer.errors import ConfigError

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
    if device_type is None:
        has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
        device_type = "cpu" if _cpu_forced() or not has_gpu else "gpu"
    if device_type == "cpu":
        raise ConfigError(
            "training.mixed_precision=fp16 needs a GPU, and this run trains on the CPU (fp16 autocast "
            "and loss scaling are GPU features; Accelerate would silently run in fp32). Use "
            "training.mixed_precision=bf16 (runs under autocast on CPU) or training.mixed_precision=no."
        )


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
# FSDP


def block_class_names(groups: list) -> list[str]:
    """Class names of the model's transformer blocks (its "block" layer groups): FSDP's wrap units."""
    names = []
    for g in groups:
        if g.kind != "block":
            continue
        for m in g.modules:
            name = type(m).__name__
            if name not in names:
                names.append(name)
    return names


def fsdp_plugin(training, groups: list):
    """Accelerate's FSDP plugin for a run: FSDP1 with `use_orig_params=True`, full sharding, one
    unit per transformer block, the checkpoint format of `training.fsdp_state_dict_type`."""
    from accelerate import FullyShardedDataParallelPlugin

    names = block_class_names(groups)
    return FullyShardedDataParallelPlugin(
        fsdp_version=1,  # sharding: FULL_SHARD unless FSDP_SHARDING_STRATEGY (an accelerate config) says otherwise
        auto_wrap_policy="transformer_based_wrap" if names else "no_wrap",
        transformer_cls_names_to_wrap=names or None,
        use_orig_params=True,
        state_dict_type=f"{training.fsdp_state_dict_type.upper()}_STATE_DICT",
        sync_module_states=False,
        cpu_ram_efficient_loading=False,
        activation_checkpointing=bool(training.gradient_checkpointing),
    )


def uses_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def uses_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def enable_fsdp_on_cpu(accelerator, plugin) -> bool:
    """Make a multi-process CPU (gloo) run use FSDP.

    Accelerate 1.15's `AcceleratorState` turns an FSDP plugin into `DistributedType.FSDP` only for
    accelerator devices (its list in `state.py` leaves out `MULTI_CPU`), so on CPU it would silently
    train with DDP. torch's FSDP itself runs on CPU with gloo, and Accelerate's FSDP paths (wrapping,
    `save_state`, `load_state`) work once the state says FSDP. Returns True when it switched.
    """
    from accelerate.utils import DistributedType

    state = accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU:
        return False
    from accelerate.state import PartialState

    # AcceleratorState copies PartialState's shared dict whenever one is built again (Accelerate
    # does during `prepare`), so both say FSDP. Accelerate names the CPU device "cpu:<local index>";
    # FSDP compares it with "cpu" and refuses.
    for shared in (state.__dict__, PartialState._shared_state):
        shared["distributed_type"] = DistributedType.FSDP
        shared["device"] = torch.device("cpu")
    state.fsdp_plugin = plugin
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType

    if plugin.state_dict_type == StateDictType.FULL_STATE_DICT:
        # Offloading a full state dict "to CPU" when it already is there crashes torch 2.13 (SIGSEGV),
        # and Accelerate's save_fsdp_model sets `state_dict_config.offload_to_cpu = True` for several
        # processes (torch wants the exact config classes, so no subclass): the plugin hands out a
        # fresh no-offload config on every read.
        class CPUFullStateDictPlugin(type(plugin)):
            @property
            def state_dict_config(self):
                return FullStateDictConfig(offload_to_cpu=False, rank0_only=True)

            @state_dict_config.setter
            def state_dict_config(self, value):
                pass

            @property
            def optim_state_dict_config(self):
                return FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=True)

            @optim_state_dict_config.setter
            def optim_state_dict_config(self, value):
                pass

        plugin.__class__ = CPUFullStateDictPlugin
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    return True


def gather_state_dict(accelerator, model: nn.Module) -> dict | None:
    """The full weights of the prepared `model` on the main process (None on the others), clean
    names. Under FSDP a collective: every process must call it (torch gathers a FULL_STATE_DICT to
    rank 0 on CPU). Calling `state_dict()` on the unwrapped model instead would run the FSDP units'
    state-dict hooks, which are collectives too, on the main process alone and hang."""
    if not uses_fsdp(accelerator):
        return accelerator.get_state_dict(model) if accelerator.is_main_process else None
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    # Accelerate's get_state_dict asks for offload_to_cpu, which crashes (SIGSEGV) in torch 2.13
    # when the weights already live on the CPU; there is nothing to offload then.
    config = FullStateDictConfig(offload_to_cpu=accelerator.device.type != "cpu", rank0_only=True)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
        state = model.state_dict()
    return state if accelerator.is_main_process else None


def load_full_state_dict(accelerator, model: nn.Module, state: dict) -> None:
    """Load full weights (every process passes the same `state`) into the prepared `model`."""
    if not uses_fsdp(accelerator):
        accelerator.unwrap_model(model).load_state_dict(state)
        return
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=False)):
        model.load_state_dict(state)


def prime_optimizer_for_resume(accelerator, optimizer) -> bool:
    """Give a fresh optimizer its state before an FSDP sharded checkpoint is loaded into it.

    Accelerate loads a sharded optimizer checkpoint into the template `FSDP.optim_state_dict` makes
    from the optimizer's *current* state; a fresh optimizer has none, so the AdamW moments would be
    silently dropped (weights resume exactly, the next updates differ). One step with zero
    gradients at learning rate 0 creates the state without changing a weight (AdamW's update and
    decoupled weight decay both scale with the learning rate); the checkpoint then overwrites it.
    Returns True when it primed.
    """
    from torch.distributed.fsdp import StateDictType

    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if not uses_fsdp(accelerator) or plugin is None or plugin.state_dict_type != StateDictType.SHARDED_STATE_DICT:
        return False
    inner = getattr(optimizer, "optimizer", optimizer)
    if inner.state:
        return False
    lrs = [g["lr"] for g in inner.param_groups]
    for g in inner.param_groups:
        g["lr"] = 0.0
        for p in g["params"]:
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
    inner.step()
    inner.zero_grad(set_to_none=True)
    for g, lr in zip(inner.param_groups, lrs):
        g["lr"] = lr
    return True


def final_model(accelerator, model: nn.Module, rebuild) -> nn.Module | None:
    """The trained model to save, as a plain (unwrapped, unsharded) module.

    Without FSDP: the unwrapped model. Under FSDP (a collective): the full weights gathered to the
    main process and loaded into `rebuild()`, a fresh copy of the model with the strategy applied
    (its FSDP-wrapped original cannot be saved by `save_pretrained` from one process); None on the
    other processes.
    """
    if not uses_fsdp(accelerator):
        return accelerator.unwrap_model(model)
    state = gather_state_dict(accelerator, model)
    if state is None:
        return None
    fresh = rebuild()
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    # Tied weights (an output layer sharing the input embeddings) may be gathered under one name.
    tied = set(getattr(fresh, "_tied_weights_keys", None) or [])
    if unexpected or any(k not in tied for k in missing):
        raise RuntimeError(f"FSDP weights do not fit the rebuilt model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return fresh


# ----------------------------------------------------------------------------------------------
# DeepSpeed


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
        zero.update({
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            # The run folder needs full weights: gather them at save time.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": training.batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "gradient_clipping": float(training.max_grad_norm) if training.max_grad_norm else 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": mp == "bf16"},
        "fp16": {"enabled": mp == "fp16", "loss_scale": 0, "initial_scale_power": 16,
                 "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
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
        for text in ("FSDP.state_dict_type", "Please use DTensor", "`_get_pg_default_device`",
                     "Multiple backends are registered"):
            warnings.filterwarnings("ignore", message=f".*{text}", module="torch.distributed.fsdp")
    if "fsdp_plugin" in plugins and enable_fsdp_on_cpu(accelerator, plugins["fsdp_plugin"]):
        logger.info("FSDP on %d CPU processes (gloo).", accelerator.num_processes)
    elif "fsdp_plugin" not in plugins and accelerator.device.type == "cpu" and uses_fsdp(accelerator) \
            and getattr(accelerator.state, "fsdp_plugin", None) is None:
        # An earlier FSDP run in this CPU process left PartialState saying FSDP: back to DDP.
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        for shared in (accelerator.state.__dict__, PartialState._shared_state):
            shared["distributed_type"] = DistributedType.MULTI_CPU
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


def accelerate_command(accelerate_config, config: str, overrides: list[str], extra: list[str] = (),
                       devices: int | None = None) -> tuple[list[str], list[str]]:
    """The `accelerate launch` command that runs `hf-transfer train` under an accelerate config
    file, and notes on it (such as asking for more processes than the machine has devices).

    Returns:
        (command, notes)
    """
    import sys
    from pathlib import Path

    from hf_transfer.config_parsing import read_yaml

    path = Path(accelerate_config)
    conf = read_yaml(path, "--accelerate-config", "Shipped ones: recipes/accelerate/*.yaml (single_gpu, "
                     "multi_gpu, fsdp, deepspeed_zero2, deepspeed_zero3, multi_node, cpu_2proc).")
    if devices is None:
        devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    notes = []
    wanted = int(conf.get("num_processes") or 1) // max(1, int(conf.get("num_machines") or 1))
    on_cpu = bool(conf.get("use_cpu")) or conf.get("distributed_type") == "MULTI_CPU" or _cpu_forced()
    if not on_cpu and wanted > max(devices, 1):
        where = "no GPU" if devices == 0 else f"{devices} GPU(s)"
        notes.append(
            f"{path.name} asks for {wanted} processes per machine, and this machine has {where}. "
            + ("Without GPUs that does not give several processes: run one (no --accelerate-config), or "
               "several CPU processes with ACCELERATE_USE_CPU=1 and recipes/accelerate/cpu_2proc.yaml."
               if devices == 0 else
               f"Set num_processes to {devices} or fewer.")
        )
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path),
           "-m", "hf_transfer", "train", *extra, config, *overrides]
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
