"""FSDP for a run: Accelerate's plugin, FSDP on CPU processes, full weights in and out.

Accelerate's `FullyShardedDataParallelPlugin` with `use_orig_params=True` (frozen and trainable
parameters may share a flat parameter; pytorch #104690, peft #1702), one unit per transformer block,
sharded or full checkpoints. What Accelerate 1.15 / torch 2.13 leave out is here: FSDP on gloo CPU
processes, gathering full weights without the CPU-offload crash, and a sharded-optimizer resume
that keeps the AdamW moments. `engine.distributed` wires these into the engine.
"""

from __future__ import annotations

import torch
from torch import nn


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


def set_distributed_type(state, distributed_type, device: torch.device | None = None) -> None:
    """Say `distributed_type` (and `device`) in `state` and in `PartialState`'s shared dict.

    AcceleratorState copies PartialState's shared dict whenever one is built again (Accelerate
    does during `prepare`), so both must say the same.
    """
    from accelerate.state import PartialState

    for shared in (state.__dict__, PartialState._shared_state):
        shared["distributed_type"] = distributed_type
        if device is not None:
            shared["device"] = device


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
    # Accelerate names the CPU device "cpu:<local index>"; FSDP compares it with "cpu" and refuses.
    set_distributed_type(state, DistributedType.FSDP, torch.device("cpu"))
    state.fsdp_plugin = plugin
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType

    if plugin.state_dict_type == StateDictType.FULL_STATE_DICT:
        # Offloading a full state dict "to CPU" when it already is there crashes torch 2.13 (SIGSEGV),
        # and Accelerate's save_fsdp_model sets `state_dict_config.offload_to_cpu = True` for several
        # processes (torch wants the exact config classes, so no subclass): the plugin hands out a
        # fresh no-offload config on every read, and ignores assignments.
        def fixed(config_cls):
            return property(lambda self: config_cls(offload_to_cpu=False, rank0_only=True), lambda self, value: None)

        class CPUFullStateDictPlugin(type(plugin)):
            state_dict_config = fixed(FullStateDictConfig)
            optim_state_dict_config = fixed(FullOptimStateDictConfig)

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
        raise RuntimeError(
            f"FSDP weights do not fit the rebuilt model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return fresh
