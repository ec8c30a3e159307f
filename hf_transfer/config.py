"""The one typed config schema: defaults, then a YAML file, then `a.b=value` overrides.

Every key is a dataclass field, so an unknown key or a wrong type is an error that names the key,
where it came from (the file or the command line) and the closest valid key. `strategy` is checked
against the settings dataclass of the strategy it names (see `hf_transfer.strategies`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hf_transfer.config_parsing import Rules, build, parse_override, read_yaml, set_dotted  # noqa: F401
from hf_transfer.errors import ConfigError
from hf_transfer.registry import _did_you_mean, available_recipes, strategy_settings_class


@dataclass
class StrategyConfig:
    """Settings shared by every strategy (each strategy extends it with its own dataclass).

    Attributes:
        name: Which strategy runs (`full`, `scratch`, `freeze`, `partial`, ...).
        layer_lr_decay: Layer-wise (discriminative) learning rates: the group at depth d below
            the top gets `learning_rate * layer_lr_decay ** d`. 1.0 turns it off.
        head_lr_multiplier: The new head's learning rate is `learning_rate * head_lr_multiplier`.
        head_init: `probe` (default): the new head starts as a logistic regression fitted on what it
            reads from the frozen pretrained model (`strategies.head_init`); `random`: the
            checkpoint family's random initialisation. Strategies that train no head ignore it.
    """

    name: str = "full"
    layer_lr_decay: float = 1.0
    head_lr_multiplier: float = 1.0
    head_init: Literal["probe", "random"] = "probe"


@dataclass
class DataSource:
    """One split: a Hub dataset or a local file or folder.

    Attributes:
        name: Hub dataset id (`stanfordnlp/sst2`) or a local csv/json/jsonl/parquet file or folder.
        config: Hub dataset configuration name, if it has several.
        split: Split to load (`train`, `validation`, `test`, or a slice such as `train[:10%]`).
        revision: Hub dataset revision (branch, tag or commit).
        encoding: Text encoding of a local csv file (for example `latin-1`).
    """

    name: str = ""
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    encoding: str | None = None


@dataclass
class ModelConfig:
    """The pretrained checkpoint.

    Attributes:
        name_or_path: Hub model id or local folder.
        revision: Hub revision (branch, tag or commit) to pin.
        trust_remote_code: Run code shipped with the checkpoint. Off unless you trust its author.
    """

    name_or_path: str = ""
    revision: str | None = None
    trust_remote_code: bool = False


@dataclass
class AugmentationConfig:
    """Training-split image augmentation (switched off wherever features are cached).

    Attributes:
        enabled: Turn augmentation on for the training split.
        random_resized_crop: Scale range lower bound of a random resized crop (1.0 = off).
        horizontal_flip: Probability of a horizontal flip.
        rotation_degrees: Maximum absolute rotation in degrees.
        color_jitter: Strength of brightness/contrast/saturation jitter (0 = off).
    """

    enabled: bool = False
    random_resized_crop: float = 0.8
    horizontal_flip: float = 0.5
    rotation_degrees: float = 0.0
    color_jitter: float = 0.0


@dataclass
class TaggingConfig:
    """Token classification (`recipe: token_classification`) data settings.

    Attributes:
        tokens_column: Column holding each sentence's tokens (a list of words) in JSON lines or Hub
            data; detected when empty (`tokens`, `words`).
        tags_column: Column holding one tag per token; detected when empty (`tags`, `ner_tags`,
            `labels`).
        spans_column: Column of character-span annotations (`[{start, end, label}]`) over the
            `data.text_column` text; detected when empty (`entities`, `spans`).
        scheme: Tag scheme: `auto` (BIOES when any E-/S- tag is present, else BIO), `BIO` or
            `BIOES`. Span annotations are turned into this scheme (`auto`: BIO).
        labels: The tag set, in id order (for example `[O, B-PER, I-PER]`). Empty: `O` plus every
            tag of the scheme for each entity type found in the training data. A tag outside
            the set in any split is an error naming the file and line.
        subword_labels: Which subwords of a word carry its tag in training: `first` (the others
            get -100) or `all` (continuation pieces of a `B-X` word get `I-X`). Evaluation and
            prediction always read the first subword.
        invalid_tags: An `I-X` that does not continue an `X` entity (no `B-X` before it):
            `repair` it into `B-X` (counted and logged) or `error`.
        strict: Entity metrics in seqeval's strict mode (an entity counts only with a valid
            scheme start and end) instead of its default conlleval-style mode.
        column_separator: Field separator of CoNLL files; empty: any whitespace.
    """

    tokens_column: str | None = None
    tags_column: str | None = None
    spans_column: str | None = None
    scheme: Literal["auto", "BIO", "BIOES"] = "auto"
    labels: list[str] | None = None
    subword_labels: Literal["first", "all"] = "first"
    invalid_tags: Literal["repair", "error"] = "repair"
    strict: bool = False
    column_separator: str | None = None


@dataclass
class DataConfig:
    """Where the data comes from and how it is read.

    Attributes:
        train: Training split.
        eval: Evaluation split; when empty, `eval_fraction` of train is carved out (stratified).
        test: Optional held-out test split, scored once at the end (`test_*` metrics).
        text_column: Text column (detected when empty).
        text_pair_column: Second text column for sentence-pair tasks.
        label_column: Label column (detected when empty).
        image_column: Image column (detected when empty).
        audio_column: Audio column (detected when empty).
        filter: Keep only rows matching this pandas query, in every split (for example
            `sentiment != 'neutral' and confidence >= 0.9`).
        seed: Seed for carving the eval split and subsampling (defaults to training.seed); fix it
            to compare several training seeds on the same examples.
        max_train_samples: Keep at most this many training examples (stratified, seeded).
        max_eval_samples: Keep at most this many evaluation examples.
        samples_per_class: Keep at most this many training examples of each class (few-shot
            setups such as 8 or 64 per class; also balances a skewed set).
        eval_samples_per_class: The same for the evaluation split.
        train_indices: Train on exactly these rows of the training pool (positions after
            `filter` and the eval carve-out, before `samples_per_class` / `max_train_samples`).
            `hf-transfer compare` writes them, so that its nested subsamples are explicit.
        eval_fraction: Fraction of train used as eval when no eval split is given.
        max_length: Maximum tokens per text example (longer ones are truncated).
        group_by_length: Batch texts of similar length together to cut padding.
        on_bad_file: `skip` unreadable images/audio (counted in the log) or `error`.
        max_audio_seconds: Cut audio inputs (and Whisper's encoder window) to this many seconds.
        long_audio: `error` on clips longer than the model's window, or `truncate` them.
        augmentation: Image augmentation for the training split.
        language: Spoken language for speech recognition with a multilingual Whisper (`en`, `ja`, ...).
        asr_task: Whisper's task token: `transcribe`, or `translate` into English.
        text_normalization: Normalisation before WER/CER: `basic`, `none` or `whisper_english`.
        target: Unlabelled (or labelled) data from the target domain, in the same form as train:
            used by `adaptation.name` (dann, adabn) and `data.normalize_from: target`.
        normalize_from: Image normalisation mean/std: the checkpoint's (`checkpoint`), or
            recomputed from the `target` images (saved with the run's image processor).
        mlm_probability: Masked-LM pretraining (`hf-transfer pretrain`): share of tokens masked.
        label_separator: Multi-label recipes: the separator between labels when `label_column`
            holds them as one string (`sports;politics`). A list column needs none.
        label_columns: Multi-label recipes: one 0/1 column per label instead of `label_column`
            (the column names are the label names).
        label_names: Multi-label recipes: the declared label set, in id order. A label outside
            it is an error naming the file and row. Unset: the labels found in the train split.
        standardize_targets: Regression recipes: train on (y - mean) / std of the training
            targets; the saved head is rescaled so the model outputs the original units.
        tagging: Token classification: columns, tag scheme, subword alignment, repairs.
    """

    train: DataSource = field(default_factory=DataSource)
    eval: DataSource | None = None
    test: DataSource | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    image_column: str | None = None
    audio_column: str | None = None
    filter: str | None = None
    seed: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    samples_per_class: int | None = None
    eval_samples_per_class: int | None = None
    train_indices: list[int] | None = None
    eval_fraction: float = 0.1
    max_length: int = 256
    group_by_length: bool = True
    on_bad_file: Literal["skip", "error"] = "skip"
    max_audio_seconds: float | None = None
    long_audio: Literal["error", "truncate"] = "error"
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    language: str | None = None
    asr_task: Literal["transcribe", "translate"] = "transcribe"
    text_normalization: Literal["basic", "none", "whisper_english"] = "basic"
    target: DataSource | None = None
    normalize_from: Literal["checkpoint", "target"] = "checkpoint"
    mlm_probability: float = 0.15
    label_separator: str = ";"
    label_columns: list[str] | None = None
    label_names: list[str] | None = None
    standardize_targets: bool = True
    tagging: TaggingConfig = field(default_factory=TaggingConfig)


@dataclass
class TrainingConfig:
    """Optimisation, evaluation and checkpointing.

    Attributes:
        epochs: Passes over the training data. Unset: 3, raised to whole epochs until the run
            has `min_steps` optimizer steps (see `hf_transfer.engine.budget`).
        max_steps: Stop after this many optimizer steps (overrides `epochs` when set; -1 or
            null = unset, as in transformers' Trainer).
        min_steps: At least this many optimizer steps (epochs raised to reach it). Unset: 50 when
            `epochs` is unset, off when `epochs` is given; 0 turns it off.
        learning_rate: Base learning rate (AdamW). Unset: the strategy's own default (full 5e-5,
            partial 1e-4, freeze 3e-3, lora 1e-3, ...; `hf_transfer.engine.budget`). The values
            used and where each came from are in `metrics.json` under `budget`.
        batch_size: Examples per device per forward pass.
        eval_batch_size: Examples per device at evaluation (defaults to `batch_size`).
        gradient_accumulation_steps: Forward passes per optimizer step.
        weight_decay: AdamW weight decay, never applied to biases and norm weights.
        warmup_ratio: Fraction of steps spent warming the learning rate up, in [0, 1).
        scheduler: Learning-rate schedule after warm-up.
        max_grad_norm: Gradient clipping norm (0 = off).
        mixed_precision: `no`, `fp16`, `bf16` (bf16 also runs on CPU) or `auto`: bf16 where the
            device computes it natively (a GPU with bf16; a CPU with AMX or AVX512-BF16), `no`
            elsewhere. Unset: the strategy's default, `no` except for `contrastive`'s pair
            training, which is `auto` (measured: the same accuracy in half the time on a CPU with
            AMX; docs/benchmarks/fewshot.md). metrics.json's `mixed_precision` says what ran.
        seed: Seeds data order, dropout and the new head's initialisation.
        early_stopping_patience: Stop after this many evaluations without improvement (0 = off).
        early_stopping_threshold: Minimum improvement that counts.
        metric_for_best_model: Metric that selects the best checkpoint (`f1`, `accuracy`, `loss`, ...).
        load_best_model_at_end: Save the best evaluated weights, not the last ones.
        class_weights: `none`, `balanced` (inverse class frequency) or one weight per label.
        label_smoothing: Cross-entropy label smoothing.
        eval_strategy: Evaluate each `epoch`, every `eval_steps` (`steps`) or `no`.
        eval_steps: Steps between evaluations when `eval_strategy` is `steps`.
        save_strategy: Checkpoint each `epoch`, every `save_steps` (`steps`) or `no`.
        save_steps: Steps between checkpoints when `save_strategy` is `steps`.
        save_total_limit: Keep at most this many checkpoints.
        logging_steps: Steps between training-loss log records.
        resume_from_checkpoint: `latest` or a checkpoint folder to continue from.
        report_to: Accelerate trackers (`tensorboard`, ...); empty for none.
        num_workers: DataLoader worker processes.
        generation_num_beams: Beams for generation at evaluation (speech recognition).
        recalibrate_batchnorm: After training, recompute batch-norm running statistics over the
            training data with the final weights (CNNs; gives short scratch runs a fair evaluation).
        cache_frozen_prefix: For `freeze` and `partial`: run the frozen lower blocks once per
            example and train only the top on their cached outputs (needs no augmentation; BERT
            family and ViT/DeiT encoders). The frozen blocks run once, in eval mode, so their
            dropout is gone: training matches the uncached run only with dropout off below the
            cut (the trainable top keeps its dropout). Evaluation is unchanged.
        gradient_checkpointing: Recompute each block's activations in backward instead of keeping
            them (non-reentrant, correct with frozen layers and adapters): less memory, more time.
        distributed: `auto` (whatever `accelerate launch` set up; DDP for several processes),
            `ddp`, `fsdp` (sharded, `use_orig_params`, one unit per block) or `deepspeed` (ZeRO,
            config generated from these settings). See docs/distributed.md.
        fsdp_state_dict_type: FSDP checkpoint format: `sharded` (each process writes its shard)
            or `full` (gathered on the main process).
        deepspeed_zero_stage: DeepSpeed ZeRO stage, 2 (optimizer state and gradients sharded) or
            3 (parameters too).
        record_eval_predictions: Classification: also write each eval (and test) example's predicted
            label id, true label id and loss, in split order, into metrics.json (`eval_predictions`,
            `eval_references`, `eval_example_losses`). `hf-transfer compare` sets it in its cells for
            the paired bootstrap behind its verdicts.
        regression_loss: Regression recipes: `mse` or `huber` (on standardised targets).
        huber_delta: Regression recipes: where the Huber loss turns from squared to linear, in
            standard deviations of the target when targets are standardised.
        multilabel_threshold: Multi-label recipes: `tune` (per-label thresholds chosen by
            cross-validation on held-out predictions, see docs/multilabel.md) or one fixed
            threshold for every label (for example 0.5).
    """

    epochs: float | None = None
    max_steps: int | None = None
    min_steps: int | None = None
    learning_rate: float | None = None
    batch_size: int = 16
    eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] | None = None
    seed: int = 42
    early_stopping_patience: int = 0
    early_stopping_threshold: float = 0.0
    metric_for_best_model: str = "f1"
    load_best_model_at_end: bool = True
    class_weights: Literal["none", "balanced"] | list[float] = "none"
    label_smoothing: float = 0.0
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    eval_steps: int = 100
    save_strategy: Literal["epoch", "steps", "no"] = "epoch"
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    resume_from_checkpoint: str | None = None
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    num_workers: int = 0
    generation_num_beams: int = 1
    cache_frozen_prefix: bool = False
    recalibrate_batchnorm: bool = False
    gradient_checkpointing: bool = False
    distributed: Literal["auto", "ddp", "fsdp", "deepspeed"] = "auto"
    fsdp_state_dict_type: Literal["sharded", "full"] = "sharded"
    deepspeed_zero_stage: Literal[2, 3] = 2
    record_eval_predictions: bool = False
    regression_loss: Literal["mse", "huber"] = "mse"
    huber_delta: float = 1.0
    multilabel_threshold: Literal["tune"] | float = "tune"

    def __post_init__(self):
        if self.max_steps == -1:  # transformers' spelling of "unset"
            self.max_steps = None


@dataclass
class ExportConfig:
    """What happens to the finished run.

    Attributes:
        push_to_hub: Push the exported model to the Hub at the end of training.
        repo_id: Target Hub repository (`user/name`).
        private: Create the repository as private.
        revision: Branch to push to.
        merge_adapter: Merge a LoRA/IA3 adapter into the weights on export.
        license: License for the model card when the base model's is unknown.
    """

    push_to_hub: bool = False
    repo_id: str | None = None
    private: bool = False
    revision: str | None = None
    merge_adapter: bool = True
    license: str | None = None


@dataclass
class AdaptationConfig:
    """Domain adaptation towards `data.target` (orthogonal to `strategy.name`).

    Attributes:
        name: `none`; `dann` (gradient-reversal domain classifier on the pooled features the head
            reads, unlabelled target batches interleaved with the source batches); `adabn`
            (batch-norm statistics recomputed on the target data after training; CNNs).
        lambda_max: DANN: final weight of the reversed domain gradient; the weight ramps as
            lambda_max * (2 / (1 + exp(-gamma * p)) - 1), p = training progress from 0 to 1.
        gamma: DANN: steepness of that ramp (10 in Ganin et al. 2016).
        domain_hidden_size: DANN: hidden width of the domain classifier (0 = a linear classifier).
        domain_lr_multiplier: DANN: the domain classifier's learning rate over the base rate.
        target_batch_size: DANN: target examples per source batch (defaults to training.batch_size).
        max_target_samples: Use at most this many target examples (seeded subsample).
    """

    name: Literal["none", "dann", "adabn"] = "none"
    lambda_max: float = 1.0
    gamma: float = 10.0
    domain_hidden_size: int = 256
    domain_lr_multiplier: float = 10.0
    target_batch_size: int | None = None
    max_target_samples: int | None = None


@dataclass
class TrainConfig:
    """A whole run.

    Attributes:
        recipe: Task family.
        output_dir: Run folder: model, config, metrics, plots, logs, checkpoints.
        overwrite_output_dir: Replace a finished or interrupted run already in `output_dir`
            (otherwise refused unless resuming; `--overwrite` on the command line).
        model: The pretrained checkpoint.
        data: The data.
        strategy: How knowledge is transferred (`strategy.name` picks the strategy).
        training: Optimisation and evaluation.
        export: Export and push.
        adaptation: Domain adaptation towards `data.target` (`adaptation.name`).
        stages: Partial configs (data, strategy, training, ...) trained in order, each from the
            previous stage's body with a fresh head; a stage may carry a `name`.
    """

    recipe: str = "text_classification"
    output_dir: str = "runs/default"
    overwrite_output_dir: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    stages: list[Any] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Loading and validation (the generic machinery is `hf_transfer.config_parsing`)


def _choose_class(cls: type, raw: dict, prefix: str, source: str) -> type:
    if isinstance(cls, type) and issubclass(cls, StrategyConfig):
        name = raw.get("name", "full")
        try:
            return strategy_settings_class(name)
        except ConfigError as e:
            raise ConfigError(f"{e} (key '{prefix}.name' in {source})") from None
    return cls


_RULES = Rules(shorthand=(DataSource,), choose_class=_choose_class)


def _build(cls: type, raw: dict, prefix: str, source: str) -> Any:
    return build(cls, raw, prefix, source, _RULES)


def config_from_dict(raw: dict, source: str = "config") -> TrainConfig:
    """Validate a nested mapping into a `TrainConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping of config keys, got {type(raw).__name__}.")
    cfg = _build(TrainConfig, raw, "", source)
    recipes = available_recipes()
    if recipes and cfg.recipe not in recipes:  # empty only when no task package is installed
        raise ConfigError(
            f"Unknown recipe '{cfg.recipe}' in {source}.{_did_you_mean(cfg.recipe, recipes)} "
            f"Available: {', '.join(recipes)}."
        )
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load defaults, then the YAML file, then `a.b=value` overrides, and validate the result.

    Args:
        path: YAML file, or None for defaults only.
        overrides: `a.b=value` strings, applied in order.

    Returns:
        The validated config.

    Raises:
        ConfigError: The file is missing or not YAML, or a key or value is wrong.
    """
    raw: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        raw = read_yaml(
            path,
            "Config file",
            "`hf-transfer ls` lists the shipped configs; `hf-transfer cp NAME my_run.yaml` copies one to edit.",
        )
        source = f"'{path}'"
        config_from_dict(raw, source)  # errors in the file name the file
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
        config_from_dict(raw, f"command-line override '{text}'")
    cfg = config_from_dict(raw, source)
    check_config(cfg, source)
    return cfg


def check_config(cfg: TrainConfig, source: str = "config") -> None:
    """Checks that span several keys."""
    if not cfg.model.name_or_path:
        raise ConfigError(
            f"model.name_or_path is empty in {source}: set it to a Hub id "
            "(google-bert/bert-base-uncased) or a local model folder."
        )
    from hf_transfer.config_checks import check_domain_settings, check_target_settings, stage_configs

    if cfg.stages:
        for stage in stage_configs(cfg, source):  # each stage merged with the top level, checked whole
            check_config(stage.cfg, stage.source)
        return
    if not cfg.data.train.name:
        raise ConfigError(
            f"data.train is empty in {source}: set it to a Hub dataset id or a local "
            "csv/json/jsonl/parquet file or folder."
        )
    if not 0.0 < cfg.data.eval_fraction < 1.0:
        raise ConfigError(f"data.eval_fraction must be between 0 and 1, got {cfg.data.eval_fraction}.")
    t = cfg.training
    for name in ("batch_size", "gradient_accumulation_steps"):
        if getattr(t, name) < 1:
            raise ConfigError(f"training.{name} must be at least 1, got {getattr(t, name)}.")
    if t.learning_rate is not None and t.learning_rate <= 0:
        raise ConfigError(f"training.learning_rate must be positive, got {t.learning_rate}.")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ConfigError(
            f"training.warmup_ratio must be at least 0 and below 1 (the share of the training steps spent warming "
            f"the learning rate up; 0.1 is usual), got {t.warmup_ratio:g}."
            + (" At 1 or more the set learning rate is never reached." if t.warmup_ratio >= 1 else "")
        )
    if t.max_steps is not None and t.max_steps != -1 and t.max_steps < 1:
        raise ConfigError(
            f"training.max_steps must be a positive number of optimizer steps, or -1 / null for unset "
            f"(train for training.epochs), got {t.max_steps}."
        )
    if t.min_steps is not None and t.min_steps < 0:
        raise ConfigError(f"training.min_steps must be 0 (off) or more, got {t.min_steps}.")
    if t.epochs is not None and not math.isfinite(t.epochs):
        raise ConfigError(f"training.epochs must be a finite number, got {t.epochs}.")
    if t.epochs is not None and t.epochs <= 0 and not (t.max_steps and t.max_steps > 0):
        raise ConfigError(f"training.epochs must be positive (or set training.max_steps), got {t.epochs}.")
    check_domain_settings(cfg, source)
    check_target_settings(cfg, source)


def config_to_dict(cfg: TrainConfig) -> dict:
    """The config as plain data, ready for YAML."""
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (it never holds tokens: none are config keys), atomically:
    an interrupted write leaves the previous file, never half of one."""
    from hf_transfer.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
