"""training.distributed (DDP, FSDP, DeepSpeed config), real mixed precision, the shipped
`accelerate` config files and `hf-transfer train --accelerate-config`.

The 2-process tests run FSDP on CPU processes (gloo) through `accelerate launch`, the way
tests/test_multiprocess.py runs DDP; they are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
import yaml

from conftest import free_port, launch_cpu_processes
from hf_transfer.config import load_config
from hf_transfer.engine import distributed as dist
from hf_transfer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).parent / "scripts" / "train_overrides.py"
ACCELERATE_CONFIGS = ROOT / "recipes" / "accelerate"


def cfg_with(text_overrides, *extra):
    return load_config(None, list(text_overrides) + list(extra))


def groups_of_tiny_bert(tiny_bert_dir):
    from transformers import BertForSequenceClassification

    from hf_transfer.models.layer_groups import layer_groups

    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    return model, layer_groups(model)


# ----------------------------------------------------------------------------------------------
# Config generation (no processes)


def test_defaults(text_overrides):
    t = cfg_with(text_overrides).training
    assert (t.distributed, t.gradient_checkpointing, t.fsdp_state_dict_type, t.deepspeed_zero_stage) == (
        "auto",
        False,
        "sharded",
        2,
    )
    with pytest.raises(ConfigError, match="training.distributed"):
        cfg_with(text_overrides, "training.distributed=horovod")


def test_fsdp_plugin_wraps_each_block_with_original_parameters(text_overrides, tiny_bert_dir):
    _, groups = groups_of_tiny_bert(tiny_bert_dir)
    t = cfg_with(
        text_overrides,
        "training.distributed=fsdp",
        "training.fsdp_state_dict_type=full",
        "training.gradient_checkpointing=true",
    ).training
    plugin = dist.fsdp_plugin(t, groups)
    from torch.distributed.fsdp import ShardingStrategy, StateDictType

    assert plugin.use_orig_params is True
    assert plugin.fsdp_version == 1
    assert plugin.transformer_cls_names_to_wrap == ["BertLayer"]
    assert plugin.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    assert plugin.activation_checkpointing is True
    sharded = dist.fsdp_plugin(cfg_with(text_overrides, "training.distributed=fsdp").training, groups)
    assert sharded.state_dict_type == StateDictType.SHARDED_STATE_DICT


def test_block_classes_for_vit_and_whisper():
    from transformers import ViTForImageClassification, WhisperForConditionalGeneration

    from hf_transfer.models.layer_groups import layer_groups
    from tiny_models import vit_config, whisper_config

    vit = ViTForImageClassification(vit_config())
    assert dist.block_class_names(layer_groups(vit)) == ["ViTLayer"]
    whisper = WhisperForConditionalGeneration(whisper_config(encoder_layers=1, decoder_layers=1))
    assert dist.block_class_names(layer_groups(whisper)) == ["WhisperEncoderLayer", "WhisperDecoderLayer"]


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("precision", ["bf16", "fp16", "no"])
def test_deepspeed_config_from_settings(text_overrides, stage, precision):
    t = cfg_with(
        text_overrides,
        f"training.deepspeed_zero_stage={stage}",
        f"training.mixed_precision={precision}",
        "training.gradient_accumulation_steps=4",
        "training.max_grad_norm=0.5",
        "training.batch_size=8",
    ).training
    ds = dist.deepspeed_config(t, num_processes=4)
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["train_micro_batch_size_per_gpu"] == 8
    assert ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 8 * 4 * 4
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is (precision == "bf16")
    assert ds["fp16"]["enabled"] is (precision == "fp16")
    if stage == 3:
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert "optimizer" not in ds and "scheduler" not in ds  # hf_transfer's AdamW groups and schedule
    json.dumps(ds)  # plain data, writable as a DeepSpeed JSON file
    no_clip = dist.deepspeed_config(cfg_with(text_overrides, "training.max_grad_norm=0").training)
    assert no_clip["gradient_clipping"] == 0.0


def test_deepspeed_plugin(text_overrides):
    t = cfg_with(text_overrides, "training.distributed=deepspeed", "training.mixed_precision=bf16").training
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ConfigError, match="pip install deepspeed"):
            dist.accelerator_plugins(t, [])
    else:
        plugin = dist.accelerator_plugins(t, [])["deepspeed_plugin"]
        assert plugin.deepspeed_config["zero_optimization"]["stage"] == 2


# ----------------------------------------------------------------------------------------------
# Mixed precision


def test_fp16_without_gpu_is_a_config_error(text_overrides, tmp_path, monkeypatch):
    from hf_transfer.run import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="bf16.*or training.mixed_precision=no"):
        train(cfg_with(text_overrides, "training.mixed_precision=fp16", f"output_dir={tmp_path / 'fp16'}"))
    with pytest.raises(ConfigError, match="needs a GPU"):
        dist.check_mixed_precision("fp16", "cpu")
    dist.check_mixed_precision("fp16", "cuda")
    dist.check_mixed_precision("bf16", "cpu")


def test_unset_precision_is_the_strategys_default_and_auto_follows_the_hardware(monkeypatch):
    from hf_transfer.strategies.base import StrategyConfig
    from hf_transfer.strategies.contrastive import Contrastive, ContrastiveConfig
    from hf_transfer.strategies.full import FullFineTuning as Full

    contrastive, full = Contrastive(ContrastiveConfig()), Full(StrategyConfig(name="full"))
    seen = []
    monkeypatch.setattr(dist, "native_bf16", lambda device_type: seen.append(device_type) or device_type == "cuda")
    assert dist.resolve_mixed_precision(None, full, "cuda") == "no"  # full's default: fp32
    assert dist.resolve_mixed_precision(None, contrastive, "cuda") == "bf16"  # contrastive's: auto
    assert dist.resolve_mixed_precision(None, contrastive, "cpu") == "no"  # no native bf16 here
    assert dist.resolve_mixed_precision("auto", full, "cuda") == "bf16"
    assert dist.resolve_mixed_precision("no", contrastive, "cuda") == "no"  # what the user set wins
    assert dist.resolve_mixed_precision("bf16", contrastive, "cpu") == "bf16"
    assert dist.resolve_mixed_precision(None, None, "cuda") == "no"
    assert seen == ["cuda", "cpu", "cuda"]
    monkeypatch.undo()
    assert dist.native_bf16("mps") is False
    assert dist.native_bf16("cuda") == (torch.cuda.is_available() and torch.cuda.is_bf16_supported(False))


def test_bf16_on_cpu_runs_under_autocast(text_overrides, tmp_path, tiny_bert_dir):
    from hf_transfer.engine.trainer import new_accelerator

    model, groups = groups_of_tiny_bert(tiny_bert_dir)
    cfg = cfg_with(text_overrides, "training.mixed_precision=bf16")
    acc = new_accelerator(cfg.training, tmp_path, groups=groups)
    assert acc.device.type == "cpu"
    seen = []
    model.bert.encoder.layer[0].attention.self.query.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    model = acc.prepare(model)
    out = model(input_ids=torch.tensor([[2, 5, 6, 3]]))
    assert seen == [torch.bfloat16]  # the matmuls ran in bf16
    assert out.logits.dtype == torch.float32  # Accelerate hands outputs back in fp32
    assert dist.precision_that_ran(acc) == "bf16"
    plain = new_accelerator(cfg_with(text_overrides).training, tmp_path, groups=groups)
    assert dist.precision_that_ran(plain) == "no"


def test_bf16_run_records_the_precision_that_ran(text_overrides, tmp_path):
    """metrics.json and the model card say bf16; a run whose requested precision did not run
    (an older run folder with fp16 asked on a CPU) has a card that says so."""
    from hf_transfer.export.card import build_card
    from hf_transfer.run import train

    out = tmp_path / "bf16"
    metrics = train(
        cfg_with(
            text_overrides,
            "training.mixed_precision=bf16",
            "training.epochs=1",
            "training.save_strategy=no",
            f"output_dir={out}",
        )
    )
    assert metrics["mixed_precision"] == "bf16"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["mixed_precision"] == "bf16" and saved["gradient_checkpointing"] == "off"
    card = str(build_card(out, repo_id="me/tiny", license="apache-2.0"))
    assert "| `training.mixed_precision` | bf16 |" in card

    # An older run: fp16 requested, silently fp32 on CPU.
    conf = yaml.safe_load((out / "config.yaml").read_text())
    conf["training"]["mixed_precision"] = "fp16"
    (out / "config.yaml").write_text(yaml.safe_dump(conf))
    saved["mixed_precision"] = "no"
    (out / "metrics.json").write_text(json.dumps(saved))
    card = str(build_card(out, repo_id="me/tiny", license="apache-2.0"))
    assert "| `training.mixed_precision` | no (fp16 requested) |" in card
    # Unset: the card shows what ran.
    conf["training"]["mixed_precision"] = None
    (out / "config.yaml").write_text(yaml.safe_dump(conf))
    saved["mixed_precision"] = "bf16"
    (out / "metrics.json").write_text(json.dumps(saved))
    card = str(build_card(out, repo_id="me/tiny", license="apache-2.0"))
    assert "| `training.mixed_precision` | bf16 |" in card


# ----------------------------------------------------------------------------------------------
# Shipped accelerate configs and --accelerate-config


def test_shipped_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    files = sorted(ACCELERATE_CONFIGS.glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"single_gpu", "multi_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3", "multi_node", "cpu_2proc"} <= names
    for f in files:
        conf = load_config_from_file(str(f))
        assert conf.num_processes >= 1, f
    fsdp = yaml.safe_load((ACCELERATE_CONFIGS / "fsdp.yaml").read_text())
    assert fsdp["fsdp_config"]["fsdp_use_orig_params"] is True
    assert fsdp["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


def test_train_accelerate_config_command(tmp_path):
    from hf_transfer.engine.distributed import accelerate_command

    cmd, notes = accelerate_command(
        ACCELERATE_CONFIGS / "multi_gpu.yaml", "my_run.yaml", ["training.epochs=1"], devices=0
    )
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[-5:] == ["-m", "hf_transfer", "train", "my_run.yaml", "training.epochs=1"]
    assert any("2 processes" in n and "no GPU" in n for n in notes)
    with pytest.raises(ConfigError, match=r"--accelerate-config '.*nope.yaml' does not exist\. Shipped ones"):
        accelerate_command(tmp_path / "nope.yaml", "my_run.yaml", [], devices=0)


# ----------------------------------------------------------------------------------------------
# Two CPU processes: FSDP against DDP, checkpoint and resume


def launch(overrides, nproc=2, timeout=900):
    return launch_cpu_processes(SCRIPT, overrides, nproc, timeout)


@pytest.fixture(scope="module")
def pretrained_tiny(tmp_path_factory, tiny_bert_dir, toy_text_data):
    """The tiny BERT after full fine-tuning on other toy sentences: a 'pretrained' checkpoint whose
    frozen lower block gives `partial` useful features (on the random tiny BERT it stays at chance)."""
    from hf_transfer.run import train
    from tests.conftest import toy_sentences, write_csv

    d = tmp_path_factory.mktemp("pretrained")
    data = write_csv(d / "pretrain.csv", toy_sentences(96, seed=7))
    train(
        load_config(
            None,
            [
                f"model.name_or_path={tiny_bert_dir}",
                f"data.train={data}",
                f"data.eval={toy_text_data['validation']}",
                f"output_dir={d / 'run'}",
                "training.epochs=8",
                "training.learning_rate=0.003",
                "training.batch_size=16",
                "training.warmup_ratio=0.0",
                "training.report_to=[]",
                "training.save_strategy=no",
            ],
        )
    )
    return d / "run"


def run_settings(text_overrides, out, strategy=("strategy.name=partial", "strategy.trainable_layers=1"), base=None):
    return [o for o in text_overrides if not o.startswith(("output_dir=", "model.name_or_path="))] + [
        f"model.name_or_path={base}",
        f"output_dir={out}",
        *strategy,
        "training.epochs=3",
        "training.batch_size=8",
        "training.save_strategy=epoch",
        "training.save_total_limit=3",
        "training.load_best_model_at_end=false",
    ]


def final_metrics(out):
    return json.loads((Path(out) / "metrics.json").read_text())


# Same data, same seed, same steps. FSDP reduce-scatters gradients where DDP all-reduces them, so
# sums happen in another order: float32 round-off, amplified a little by Adam over 18 steps.
LOSS_TOLERANCE = 1e-3
WEIGHT_TOLERANCE = 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("state_dict_type", ["sharded", "full"])
def test_fsdp_partial_matches_ddp_and_resumes(text_overrides, tmp_path, state_dict_type, pretrained_tiny):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    ddp, fsdp, resumed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "resumed"
    launch(run_settings(text_overrides, ddp, base=pretrained_tiny) + ["training.distributed=ddp"])
    fsdp_args = run_settings(text_overrides, fsdp, base=pretrained_tiny) + [
        "training.distributed=fsdp",
        f"training.fsdp_state_dict_type={state_dict_type}",
    ]
    launch(fsdp_args)
    a, b = final_metrics(ddp), final_metrics(fsdp)
    assert a["distributed"] == "MULTI_CPU" and b["distributed"] == "FSDP"
    assert b["strategy"] == "partial" and b["trainable_parameters"] == a["trainable_parameters"]
    assert b["frozen_parameters"] == a["frozen_parameters"]
    assert (a["eval_accuracy"], a["eval_f1"]) == (b["eval_accuracy"], b["eval_f1"])
    assert abs(a["eval_loss"] - b["eval_loss"]) < LOSS_TOLERANCE

    # Checkpoints in the format asked for: a folder of shards, or one full state dict.
    ckpts = sorted((fsdp / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    assert len(ckpts) == 2  # after epochs 1 and 2 (none after the last)
    files = {p.name for p in ckpts[0].iterdir()}
    assert ("pytorch_model_fsdp_0" in files) is (state_dict_type == "sharded"), files
    assert ("pytorch_model_fsdp.bin" in files) is (state_dict_type == "full"), files

    # Resume from the first checkpoint in another run folder: the same final metrics.
    launch(
        run_settings(text_overrides, resumed, base=pretrained_tiny)
        + [
            "training.distributed=fsdp",
            f"training.fsdp_state_dict_type={state_dict_type}",
            f"training.resume_from_checkpoint={ckpts[0]}",
        ]
    )
    c = final_metrics(resumed)
    assert (c["eval_accuracy"], c["eval_f1"]) == (b["eval_accuracy"], b["eval_f1"])
    assert abs(c["eval_loss"] - b["eval_loss"]) < 1e-6

    # The run folder loads with plain transformers: full weights, close to the DDP run's.
    w_ddp, w_fsdp = load_file(str(ddp / "model.safetensors")), load_file(str(fsdp / "model.safetensors"))
    assert w_ddp.keys() == w_fsdp.keys()
    for k in w_ddp:
        assert w_ddp[k].shape == w_fsdp[k].shape, k
        torch.testing.assert_close(w_fsdp[k], w_ddp[k], atol=WEIGHT_TOLERANCE, rtol=0, msg=k)
    model = AutoModelForSequenceClassification.from_pretrained(fsdp).state_dict()
    base = AutoModelForSequenceClassification.from_pretrained(pretrained_tiny).state_dict()
    frozen, trained = (
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.1.attention.self.query.weight",
    )
    assert torch.equal(model[frozen], base[frozen])  # partial: the lower block never changed
    assert not torch.equal(model[trained], base[trained])  # the top block trained


@pytest.mark.slow
def test_fsdp_rejects_strategies_that_unfreeze(text_overrides, tmp_path, tiny_bert_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(SCRIPT),
        *run_settings(text_overrides, tmp_path / "g", ("strategy.name=gradual_unfreeze",), base=tiny_bert_dir),
        "training.distributed=fsdp",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "not supported with training.distributed=fsdp" in proc.stderr


# ----------------------------------------------------------------------------------------------
# bench/gpu_check.sh without a GPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_check_fails_fast_without_gpu(tmp_path):
    import time

    start = time.time()
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no CUDA GPU is visible" in proc.stderr and "Nothing was run" in proc.stderr
    assert not (tmp_path / "out").exists()
    assert time.time() - start < 90  # one `import torch`, no model: seconds on an idle machine


def test_gpu_check_helper_refuses_without_gpu(monkeypatch, capsys):
    """bench/gpu_check.py called directly refuses the same way (checked in-process)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        gpu_check.no_gpu_exit()
    assert e.value.code == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


def test_gpu_check_script_syntax():
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")], check=True)
    import ast

    ast.parse((ROOT / "bench" / "gpu_check.py").read_text())
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert gpu_check.peak_tflops("NVIDIA H200", None) == 989.0
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert gpu_check.peak_tflops("Some New Card", None) is None
    assert gpu_check.peak_tflops("Some New Card", 500.0) == 500.0


@pytest.mark.slow
def test_fsdp_lora_with_activation_checkpointing(text_overrides, tmp_path, pretrained_tiny):
    """LoRA under FSDP (frozen base and trainable adapters in the same units: use_orig_params) with
    FSDP's activation checkpointing: trains, and the run folder holds the merged weights."""
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "lora"
    launch(
        run_settings(
            text_overrides, out, ("strategy.name=lora", "strategy.target_modules=[query,value]"), base=pretrained_tiny
        )
        + ["training.distributed=fsdp", "training.gradient_checkpointing=true", "training.epochs=2"]
    )
    m = final_metrics(out)
    assert m["distributed"] == "FSDP" and m["gradient_checkpointing"].startswith("on (FSDP")
    assert (out / "adapter").is_dir()
    trained = AutoModelForSequenceClassification.from_pretrained(out).state_dict()
    base = AutoModelForSequenceClassification.from_pretrained(pretrained_tiny).state_dict()
    q, k = "bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.0.attention.self.key.weight"
    assert not torch.equal(trained[q], base[q])  # LoRA on query, merged
    assert torch.equal(trained[k], base[k])  # no adapter on key


@pytest.mark.parametrize("kind,strategy_name", [("bert-base", "lora"), ("vit-base", "full")])
def test_gpu_check_throughput_code_path_on_cpu(kind, strategy_name, monkeypatch):
    """The measurement code of bench/gpu_check.py, on CPU with tiny sizes (the GPU run uses the real
    sizes): strategies, checkpointing, autocast, the FLOPs and MFU arithmetic, the model released
    before the cache is emptied."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    models, alive_at_release = [], []
    build = gpu_check.build

    def recording_build(kind, tiny=False):
        model, seq = build(kind, tiny)
        models.append(weakref.ref(model))
        return model, seq

    monkeypatch.setattr(gpu_check, "build", recording_build)
    monkeypatch.setattr(gpu_check, "release_memory", lambda device: alive_at_release.append(models[-1]() is not None))
    row = gpu_check.throughput(
        kind, "bf16", strategy_name, True, steps=1, warmup=1, batch=2, peak=100.0, device="cpu", tiny=True
    )
    assert row["samples_per_s"] > 0 and row["model_tflops"] >= 0 and row["mfu"] is not None
    assert row["seq"] == (128 if kind == "bert-base" else 197) and row["cuda_peak_gb"] is None
    # The model is gone when the CUDA cache is emptied (nothing else still holds its weights).
    assert alive_at_release == [False]


@pytest.mark.slow
def test_gradual_unfreeze_with_checkpointing_under_ddp(text_overrides, tmp_path, tiny_bert_dir):
    """Non-reentrant checkpointing with DDP's find_unused_parameters and blocks unfrozen after
    wrapping: both ranks end with the same weights, and the blocks unfrozen later trained."""
    from safetensors.torch import load_file
    from transformers import BertModel

    out = tmp_path / "gu"
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="1"
    )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(Path(__file__).parent / "scripts" / "ddp_train.py"),
        *[o for o in text_overrides if not o.startswith("output_dir=")],
        f"output_dir={out}",
        "strategy.name=gradual_unfreeze",
        "training.epochs=3",
        "training.batch_size=8",
        "training.gradient_checkpointing=true",
        "training.save_strategy=no",
        "training.load_best_model_at_end=false",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    r0, r1 = load_file(str(out / "rank0_of2.safetensors")), load_file(str(out / "rank1_of2.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    base = {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_bert_dir).state_dict().items()}
    key = "bert.encoder.layer.0.attention.self.query.weight"  # unfrozen at epoch 2
    assert not torch.equal(r0[key], base[key])
    assert final_metrics(out)["gradient_checkpointing"] == "on"
