"""Image classification: image folders and csv files of paths, bad files, augmentation, every
strategy, prediction. A tiny random ViT (32 px, patch 8, hidden 32, 2 layers) saved with a
1000-class head stands in for a pretrained checkpoint; the images are coloured noise whose
dominant channel (red, green or blue) is the class, so a few steps learn it."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hf_transfer.config import load_config
from hf_transfer.data.image import Augmenter, load_image, load_image_folder
from hf_transfer.errors import DataError
from hf_transfer.strategies import available_strategies
from hf_transfer.tasks import get_task

CLASSES = ("blue", "green", "red")
CHANNEL = {"red": 0, "green": 1, "blue": 2}
# Strategies too slow for a unit test here, or that need more than a few engine steps to mean anything.
SLOW_STRATEGIES: set[str] = set()
#: Text-only strategies (refused on images; tested in their own files).
TEXT_ONLY_STRATEGIES = {"static"}
#: The strategies the product ships for images: each runs below even if it stopped being registered
#: (then it fails), and a newly registered one joins them.
IMAGE_STRATEGIES = {
    "adapter",
    "auto",
    "contrastive",
    "feature_extraction",
    "freeze",
    "full",
    "gradual_unfreeze",
    "ia3",
    "lora",
    "lora_ffn",
    "lp_ft",
    "partial",
    "scratch",
}


# Tiny models run ~20x slower with 2 threads when other processes load the cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _coloured(rng, channel: int, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    a = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
    a[..., channel] = rng.integers(160, 256, (h, w))
    return a


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory) -> Path:
    """A 'pretrained' ViT with an ImageNet-sized (1000-class) head and its image processor."""
    from transformers import ViTForImageClassification

    from tiny_models import save_vit

    names = {i: f"imagenet_{i}" for i in range(1000)}
    return save_vit(
        tmp_path_factory.mktemp("tiny-vit"),
        ViTForImageClassification,
        num_labels=1000,
        id2label=names,
        label2id={v: k for k, v in names.items()},
    )


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """train/validation/test folders of red/green/blue images of assorted sizes, with one grayscale
    image, one RGBA image and one corrupt file in train."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("validation", 3), ("test", 3)):
        for name in CLASSES:
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                size = (int(rng.integers(16, 48)), int(rng.integers(16, 48)))
                Image.fromarray(_coloured(rng, CHANNEL[name], size)).save(d / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (30, 20)).astype(np.uint8), mode="L").save(root / "train/red/gray.png")
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 230, 180
    Image.fromarray(rgba, mode="RGBA").save(root / "train/green/rgba.png")
    (root / "train/blue/corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage, not a JPEG")
    return root


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory) -> Path:
    """A csv of relative image paths and labels, beside an `imgs/` folder."""
    root = tmp_path_factory.mktemp("csv-images")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(18):
        name = CLASSES[i % 3]
        Image.fromarray(_coloured(rng, CHANNEL[name], (20, 28))).save(root / "imgs" / f"{i}.jpg")
        rows.append({"filepath": f"imgs/{i}.jpg", "class": name})
    with (root / "train.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["filepath", "class"])
        w.writeheader()
        w.writerows(rows)
    return root / "train.csv"


def _overrides(model_dir, folder, tmp_path, *extra):
    return [
        "recipe=image_classification",
        f"model.name_or_path={model_dir}",
        f"data.train={folder}",
        f"data.eval={folder}",
        f"output_dir={tmp_path / 'run'}",
        "training.batch_size=8",
        "training.learning_rate=0.003",
        "training.warmup_ratio=0.0",
        "training.report_to=[]",
        "training.save_strategy=no",
        *extra,
    ]


def _cfg(tmp_path, overrides):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"recipe": "image_classification"}))
    return load_config(path, overrides)


def _task(tmp_path, overrides):
    task = get_task(_cfg(tmp_path, overrides))
    task.load_processor()
    return task


# ---------------------------------------------------------------------------------------------- data


def test_image_folder_layouts(image_folder, tmp_path):
    train = load_image_folder(image_folder, "train")
    assert train.features["label"].names == list(CLASSES)
    assert len(train) == 33  # 30 + grayscale + RGBA + the corrupt file (not opened yet)
    assert len(load_image_folder(image_folder, "val")) == 9  # alias of validation
    # A folder of class folders is a single split, whatever split is asked for.
    assert len(load_image_folder(image_folder / "test", "validation")) == 9
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "only_train" / "train" / "a" / "x.png")
    with pytest.raises(DataError, match="none for split 'test'"):
        load_image_folder(tmp_path / "only_train", "test")


def test_grayscale_and_rgba_become_rgb(image_folder):
    gray = load_image(str(image_folder / "train/red/gray.png"))
    rgba = load_image(str(image_folder / "train/green/rgba.png"))
    assert gray.mode == rgba.mode == "RGB"
    # Alpha is composited over white, so the half-transparent green is pale green, not dark.
    r, g, b = rgba.getpixel((0, 0))
    assert g > 230 and r > 50 and b > 50


def test_corrupt_file_is_skipped_and_counted(tiny_vit_dir, image_folder, tmp_path, caplog):
    task = _task(tmp_path, _overrides(tiny_vit_dir, image_folder, tmp_path))
    with caplog.at_level("WARNING", logger="hf_transfer"):
        splits = task.load_splits()
    assert len(splits.train) == 32 and len(splits.eval) == 9
    assert task.skipped_files["train"] == [str((image_folder / "train/blue/corrupt.jpg").resolve())]
    assert task.describe_data(splits)["skipped_files"] == {"train": 1, "eval": 0}
    assert "Skipped 1 unreadable image" in caplog.text and "corrupt.jpg" in caplog.text
    ds = task.preprocess(splits.train, train=True)
    batch = task.collate([ds[i] for i in range(len(ds))])  # every remaining image decodes, any mode/size
    assert batch["pixel_values"].shape == (32, 3, 32, 32)


def test_bad_file_error_names_the_file(tiny_vit_dir, image_folder, tmp_path):
    task = _task(tmp_path, _overrides(tiny_vit_dir, image_folder, tmp_path, "data.on_bad_file=error"))
    with pytest.raises(DataError, match=r"corrupt\.jpg.*on_bad_file=skip"):
        task.load_splits()


def test_csv_of_relative_paths(tiny_vit_dir, csv_data, tmp_path):
    overrides = _overrides(tiny_vit_dir, csv_data, tmp_path, "data.eval=null", "data.eval_fraction=0.34")
    task = _task(tmp_path, overrides)
    splits = task.load_splits()
    assert task.input_col == "filepath" and task.labels.names == list(CLASSES)
    assert len(splits.train) + len(splits.eval) == 18
    path = splits.train[0]["filepath"]["path"]
    assert Path(path).is_absolute() and Path(path).parent == csv_data.parent / "imgs"
    item = task.preprocess(splits.eval, train=False)[0]
    assert item["pixel_values"].shape == (3, 32, 32)


def test_augmentation_only_on_training_split(tiny_vit_dir, image_folder, tmp_path):
    aug = [
        "data.augmentation.enabled=true",
        "data.augmentation.random_resized_crop=0.5",
        "data.augmentation.horizontal_flip=0.5",
        "data.augmentation.rotation_degrees=15",
        "data.augmentation.color_jitter=0.3",
    ]
    task = _task(tmp_path, _overrides(tiny_vit_dir, image_folder, tmp_path, *aug))
    splits = task.load_splits()
    assert task.augmentation_active(True) and not task.augmentation_active(False)
    evaluation = task.preprocess(splits.eval, train=False)
    assert torch.equal(evaluation[0]["pixel_values"], evaluation[0]["pixel_values"])
    training = task.preprocess(splits.train, train=True)
    assert not torch.equal(training[0]["pixel_values"], training[0]["pixel_values"])
    # A strategy that caches features switches it off: then training examples are fixed too.
    task.disable_augmentation("features are cached")
    assert not task.augmentation_active(True)
    training = task.preprocess(splits.train, train=True)
    assert torch.equal(training[0]["pixel_values"], training[0]["pixel_values"])


def test_augmenter_keeps_image_valid():
    torch.manual_seed(0)
    augment = Augmenter(random_resized_crop=0.3, horizontal_flip=1.0, rotation_degrees=30, color_jitter=0.5)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3)).astype(np.uint8))
    for _ in range(20):
        out = augment(image)
        assert out.mode == "RGB" and 0 < out.width <= 60 and 0 < out.height <= 40
    assert Augmenter().is_identity


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained_run(tiny_vit_dir, image_folder, tmp_path_factory):
    from hf_transfer.run import train

    tmp = tmp_path_factory.mktemp("image-run")
    overrides = _overrides(
        tiny_vit_dir,
        image_folder,
        tmp,
        f"data.test={image_folder}",
        "training.epochs=3",
        "training.metric_for_best_model=accuracy",
    )
    metrics = train(_cfg(tmp, overrides))
    return tmp / "run", metrics


def test_full_fine_tuning_swaps_the_1000_class_head(trained_run):
    from transformers import AutoModelForImageClassification

    run_dir, metrics = trained_run
    model = AutoModelForImageClassification.from_pretrained(run_dir)
    assert model.classifier.weight.shape == (3, 32)
    assert model.config.id2label == dict(enumerate(CLASSES))
    assert metrics["eval_accuracy"] >= 0.66 and "test_accuracy" in metrics
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["skipped_files"] == {"train": 1, "eval": 0, "test": 0} and saved["train_size"] == 32
    assert (run_dir / "preprocessor_config.json").is_file()


def test_predict_image_files(trained_run, image_folder, capsys):
    from hf_transfer.cli import main
    from hf_transfer.run import predict

    run_dir, _ = trained_run
    files = [str(image_folder / "test/red/0.png"), str(image_folder / "train/green/rgba.png")]
    rows = predict(run_dir, files, top_k=2)
    assert [r["input"] for r in rows] == files
    assert all(r["label"] in CLASSES and len(r["top"]) == 2 for r in rows)
    assert main(["predict", str(run_dir), files[0]]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["input"] == files[0]
    with pytest.raises(DataError, match="corrupt.jpg"):
        predict(run_dir, [str(image_folder / "train/blue/corrupt.jpg")])


def test_recipe_script(tiny_vit_dir, csv_data, tmp_path, monkeypatch, capsys):
    import runpy

    from hf_transfer import recipes_dir

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"name_or_path": str(tiny_vit_dir)}, "data": {"train": str(csv_data)}}))
    overrides = [
        f"output_dir={tmp_path / 'run'}",
        "training.max_steps=1",
        "training.report_to=[]",
        "training.save_strategy=no",
        "training.metric_for_best_model=accuracy",
    ]
    monkeypatch.setattr("sys.argv", ["image_classification.py", "--config", str(config), *overrides])
    with pytest.raises(SystemExit) as done:  # the script exits with recipe_main's status
        runpy.run_path(str(recipes_dir() / "image_classification.py"), run_name="__main__")
    assert done.value.code == 0
    assert "eval_accuracy" in json.loads(capsys.readouterr().out.split("Run folder")[0])
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["recipe"] == "image_classification"


@pytest.mark.parametrize(
    "strategy", sorted((IMAGE_STRATEGIES | set(available_strategies())) - SLOW_STRATEGIES - TEXT_ONLY_STRATEGIES)
)
def test_every_strategy_runs(strategy, tiny_vit_dir, image_folder, tmp_path, monkeypatch):
    from hf_transfer.run import evaluate, train

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))  # feature_extraction's cache

    overrides = _overrides(
        tiny_vit_dir,
        image_folder,
        tmp_path,
        f"strategy.name={strategy}",
        "training.max_steps=2",
        "training.eval_strategy=no",
        "training.metric_for_best_model=accuracy",
    )
    metrics = train(_cfg(tmp_path, overrides))
    assert metrics["strategy"] == strategy
    assert metrics["labels"] == list(CLASSES)
    # The run folder holds the model that was scored: reloading it (plain transformers, the PEFT
    # merge, or the feature classifier beside it) gives the same accuracy and loss.
    again = evaluate(tmp_path / "run", split="eval")
    assert again["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"], abs=1e-9)
    assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-4, abs=1e-5)


def test_contrastive_end_to_end_pass_runs_on_images(tiny_vit_dir, image_folder, tmp_path):
    """The end-to-end pass after the pairs on a ViT (pooled image features, a probe head): it
    trains, is recorded, and the run folder scores what the run scored."""
    from hf_transfer.run import evaluate, train

    overrides = _overrides(
        tiny_vit_dir,
        image_folder,
        tmp_path,
        "strategy.name=contrastive",
        "strategy.num_pairs=32",
        "strategy.end_to_end_epochs=1",
        "training.eval_strategy=no",
        "training.metric_for_best_model=accuracy",
    )
    metrics = train(_cfg(tmp_path, overrides))
    assert metrics["end_to_end_steps"] >= 1 and metrics["end_to_end_last_loss"] > 0
    assert metrics["train_steps"] == metrics["contrastive_steps"] + metrics["end_to_end_steps"]
    again = evaluate(tmp_path / "run", split="eval")
    assert again["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"], abs=1e-9)


def test_scratch_lite0_is_neutralised_and_se_stays_frozen(image_folder, tmp_path):
    """A (tiny) converted-Lite0-style checkpoint: SE identity in scratch too, and never trainable;
    batch norms get a PyTorch-convention momentum (transformers passes TF's 0.99 through) and, from
    scratch, start as the identity."""
    from transformers import EfficientNetConfig, EfficientNetForImageClassification, ViTImageProcessor

    from hf_transfer.importers.efficientnet_lite import SE_GATE_BIAS, neutralise_squeeze_excite
    from hf_transfer.strategies import build_strategy

    model_dir = tmp_path / "lite"
    config = EfficientNetConfig(
        image_size=32, width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=320, hidden_act="relu6", num_labels=5
    )
    config.squeeze_excite_neutralised = True
    config.frozen_parameter_patterns = ["squeeze_excite"]
    model = EfficientNetForImageClassification(config)
    neutralise_squeeze_excite(model)
    model.save_pretrained(model_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)

    task = _task(tmp_path, _overrides(model_dir, image_folder, tmp_path))
    task.load_splits()
    for from_scratch in (True, False):
        model = task.build_model(from_scratch=from_scratch)
        build_strategy(_cfg(tmp_path, _overrides(model_dir, image_folder, tmp_path)).strategy).apply(model, [])
        assert not [n for n, _ in model.named_parameters() if "squeeze_excite" in n]
        state = model.state_dict()
        biases = [v for k, v in state.items() if "squeeze_excite" in k and k.endswith("expand.bias")]
        weights = [v for k, v in state.items() if "squeeze_excite" in k and k.endswith("weight")]
        assert biases and all(torch.all(b == SE_GATE_BIAS) for b in biases)
        assert all(torch.all(w == 0) for w in weights)
        assert model.config.batch_norm_momentum == pytest.approx(0.1)
        momenta = [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert momenta and max(momenta) <= 0.1  # some are built with PyTorch's default 0.1 already
        if from_scratch:  # transformers draws EfficientNet norm scales from N(0, 0.02): a dead network
            norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
            logits = model.train()(pixel_values=torch.randn(4, 3, 32, 32)).logits  # batch statistics
            assert logits.std() > 1e-3


def test_recalibrate_batchnorm_on_a_cnn(image_folder, tmp_path):
    """`training.recalibrate_batchnorm` on a tiny ResNet: the saved running statistics are the
    exact average over the training data, not the lagging momentum average."""
    from safetensors.torch import load_file

    from hf_transfer.run import train
    from tiny_models import save_resnet

    ckpt = save_resnet(tmp_path / "tiny-resnet", image_size=32, num_labels=3)
    runs = {}
    for flag in ("false", "true"):
        cfg = load_config(
            None,
            _overrides(
                ckpt,
                image_folder,
                tmp_path / flag,
                "training.max_steps=3",
                f"training.recalibrate_batchnorm={flag}",
                "training.load_best_model_at_end=false",
            ),
        )
        train(cfg)
        runs[flag] = load_file(str(tmp_path / flag / "run" / "model.safetensors"))
    key = next(k for k in runs["true"] if k.endswith("running_mean"))
    assert not torch.allclose(runs["true"][key], runs["false"][key])
    # Same weights either way: recalibration only touches the statistics.
    weight = next(k for k in runs["true"] if k.endswith("convolution.weight"))
    assert torch.equal(runs["true"][weight], runs["false"][weight])
    assert "Recalibrated the running statistics" in (tmp_path / "true" / "run" / "train.log").read_text()
