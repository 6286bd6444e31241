"""Engine overhead: tengine's Trainer step vs a hand-written PyTorch loop, same model and data.

    .venv/bin/python bench/engine_overhead.py [--steps 150] [--warmup 20] [--repeats 3]
                                              [--models gpt,hf]

Both loops train the same model (seq 128, micro-batch 32, AdamW, clip 1.0, cosine) on the
same synthetic Markov data on the CPU: tengine's tiny GPT, and a Hugging Face GPT-2 of the same
size (2 layers, width 64, 4 heads; `model.name: hf`, its dropout defaults kept in both loops),
whose raw loop reads `.logits` off the `ModelOutput` as a hand-written HF loop does. Runs
alternate raw/engine `--repeats` times and each side's median time per step (after `--warmup`
steps) is compared; the engine's time excludes its start (run dir, env.json) and end (final
checkpoint), which a raw loop does not do at all.
Prints `overhead_ratio_<model>=<engine/raw>` per model; last line `overhead_ratio=<the worst>`
(target ≤ 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from tengine import TaskSpec, Trainer, load_config
from tengine.data import build_data
from tengine.engine import Callback
from tengine.engine.optim import build_optimizer, build_scheduler
from tengine.models import build_model

MODELS = {"gpt": [],
          "hf": ["model.name=hf", 'model.hf={"config": {"model_type": "gpt2", "n_layer": 2, '
                 '"n_embd": 64, "n_head": 4, "n_positions": 128}}']}
SETTINGS = ["distributed.workers=0", "distributed.backend=single",
            "data.seq_len=128", "training.micro_batch_size=32", "training.eval_every_n_steps=0",
            "checkpoint.every_n_steps=0", "logging.plots=false", "logging.progress_bar=off",
            "training.log_every_n_steps=10", "checkpoint.resume=never"]


class StepClock(Callback):
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1, self.steps = warmup, 0.0, 0.0, 0

    def on_step_end(self, trainer, record) -> None:
        step = trainer.state.step
        if step == self.warmup:
            self.t0 = time.perf_counter()
        elif step > self.warmup:
            self.t1, self.steps = time.perf_counter(), step - self.warmup


def engine_step_time(cfg, data, warmup: int) -> float:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.vocab_size, None, cfg.data.seq_len)
    clock = StepClock(warmup)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(base=cfg.model_dump(mode="json"), overrides=[f"logging.root={tmp}"])
        Trainer(model, cfg, TaskSpec.language_modeling(), callbacks=[clock]).train(data.train)
    return (clock.t1 - clock.t0) / clock.steps


def raw_step_time(cfg, data, warmup: int) -> float:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.vocab_size, None, cfg.data.seq_len)
    opt = build_optimizer(model, cfg.optim, torch.device("cpu"))
    sched = build_scheduler(opt, cfg.schedule, cfg.training.max_steps)
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.training.micro_batch_size,
                                         shuffle=True, drop_last=True)
    step, t0 = 0, 0.0
    while step < cfg.training.max_steps:
        for batch in loader:
            out = model(batch["input_ids"])
            logits = out if torch.is_tensor(out) else out.logits  # an HF ModelOutput
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), batch["labels"].view(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % cfg.training.log_every_n_steps == 0:
                loss.item()  # a raw loop logs too
            if step == warmup:
                t0 = time.perf_counter()
            if step == cfg.training.max_steps:
                break
    return (time.perf_counter() - t0) / (step - warmup)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="gpt,hf", help="comma-separated: gpt, hf")
    args = ap.parse_args()
    ratios = {}
    for name in args.models.split(","):
        cfg = load_config("configs/quickstart.yaml",
                          [*SETTINGS, *MODELS[name], f"training.max_steps={args.steps}"])
        data = build_data(cfg.data, cfg.task)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {name}, "
              f"batch {cfg.training.micro_batch_size}×{cfg.data.seq_len}, {args.steps} steps")
        raw, eng = [], []
        for i in range(args.repeats):
            raw.append(raw_step_time(cfg, data, args.warmup))
            eng.append(engine_step_time(cfg, data, args.warmup))
            print(f"  repeat {i + 1}: raw {raw[-1] * 1e3:.2f} ms/step, "
                  f"engine {eng[-1] * 1e3:.2f} ms/step")
        r, e = statistics.median(raw), statistics.median(eng)
        ratios[name] = e / r
        print(f"  median: raw {r * 1e3:.2f} ms/step, engine {e * 1e3:.2f} ms/step")
        print(f"overhead_ratio_{name}={e / r:.3f}")
    print(f"overhead_ratio={max(ratios.values()):.3f}")


if __name__ == "__main__":
    main()
