"""Config loading: presets, extends, overrides, the builder, TaskSpec, the generated docs."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tengine.cli import main
from tengine.config import PRESETS, TaskSpec, TrainingConfigBuilder, load_config, to_yaml
from tengine.config.loader import PRESETS_DIR, preset_names
from tests.conftest import REPO


def test_presets_load_from_yaml_and_builder_alike():
    assert sorted(PRESETS) == preset_names()  # a builder method for every shipped preset
    assert PRESETS_DIR == REPO / "tengine/config/presets"  # package data, not the repo's configs/
    assert (REPO / "configs/presets").resolve() == PRESETS_DIR  # the repo's mirror is a link
    for name in PRESETS:
        from_builder = getattr(TrainingConfigBuilder, name)().build()
        from_yaml = load_config(PRESETS_DIR / f"{name}.yaml")
        assert from_builder == from_yaml
    assert TrainingConfigBuilder.distributed().build().distributed.backend == "ddp"
    assert TrainingConfigBuilder.low_memory().build().distributed.zero_stage == 3


def test_extends_merges_deeply_and_overrides_win(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: presets/baseline.yaml\ntraining: {max_steps: 7}\n")
    cfg = load_config(child, ["optim.lr=1e-3", "training.grad_accum_steps=4"])
    assert cfg.training.max_steps == 7
    assert cfg.training.micro_batch_size == 16  # from the base
    assert cfg.optim.lr == 1e-3 and cfg.training.grad_accum_steps == 4


def test_a_base_next_to_the_config_wins_over_the_shipped_preset(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets/baseline.yaml").write_text("extends: ../base2.yaml\nseed: 11\n")
    (tmp_path / "base2.yaml").write_text("training: {micro_batch_size: 3}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: presets/baseline.yaml\n")
    cfg = load_config(child)
    assert (cfg.seed, cfg.training.micro_batch_size) == (11, 3)
    (tmp_path / "presets/baseline.yaml").unlink()  # gone: the shipped preset again
    assert load_config(child).training.micro_batch_size == 16


def test_fluent_builder_sets_every_section():
    cfg = (TrainingConfigBuilder.quick_prototype()
           .with_model(size="small", dropout=0.1)
           .with_dataset(seq_len=64)
           .with_training(max_steps=50, grad_accum_steps=2)
           .with_optimizer(lr=1e-3)
           .with_scheduler(name="linear", warmup_steps=5)
           .with_hardware(precision="bf16", compile=False, workers=0)
           .with_logging(name="built", plots=False)
           .with_checkpointing(every_n_steps=10, keep_last=1)
           .with_export(formats=["safetensors", "onnx"])
           .with_reproducibility(seed=7, deterministic=True)
           .with_task(TaskSpec.language_modeling())
           .build())
    assert (cfg.model.size, cfg.data.seq_len, cfg.training.max_steps) == ("small", 64, 50)
    assert (cfg.optim.lr, cfg.schedule.name, cfg.precision, cfg.name) == (1e-3, "linear", "bf16", "built")
    assert (cfg.checkpoint.keep_last, cfg.export.formats, cfg.seed) == (1, ["safetensors", "onnx"], 7)
    assert cfg.deterministic and not cfg.logging.plots


def test_taskspec_factories_round_trip():
    spec = TaskSpec.classification(num_classes=3, class_weights=[1, 2, 3], label_smoothing=0.1)
    cfg = (TrainingConfigBuilder.quick_prototype().with_model(name="classifier")
           .with_task(spec).build())
    assert spec.apply(cfg) == cfg
    assert cfg.task.type == "classification" and cfg.task.class_weights == [1, 2, 3]
    assert TaskSpec.from_config(cfg.task) == spec
    assert TaskSpec.vision_classification(10).to_config().type == "vision_classification"


def test_config_show_prints_the_resolved_config(capsys):
    assert main(["config", "show", str(REPO / "configs/quickstart.yaml"), "--set", "seed=5"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["seed"] == 5 and shown["training"]["max_steps"] == 1000
    assert load_config(base=shown) == load_config(REPO / "configs/quickstart.yaml", ["seed=5"])


def test_resolved_config_round_trips_through_yaml():
    cfg = load_config(PRESETS_DIR / "production.yaml")
    assert load_config(base=yaml.safe_load(to_yaml(cfg))) == cfg


def test_config_docs_are_generated_from_the_schema():
    proc = subprocess.run([sys.executable, str(REPO / "scripts/gen_config_docs.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + "\nrun: make docs"
    text = (REPO / "docs/config.md").read_text()
    for name in ("training.max_steps", "training.grad_accum_steps", "optim.lr",
                 "checkpoint.every_n_steps", "distributed.zero_stage", "precision", "seed"):
        assert f"`{name}`" in text
