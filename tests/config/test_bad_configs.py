"""A bad config fails before any work: exit 2, one line per problem naming field, value, fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tengine.cli import main
from tests.conftest import REPO

QUICK = str(REPO / "configs/quickstart.yaml")

# (overrides, substrings every one of which must appear in stderr)
CASES = {
    "unknown top-level key": (["trainng.max_steps=3"], ["trainng", "did you mean 'training'"]),
    "unknown nested key": (["optim.lrr=0.1"], ["optim.lrr", "did you mean 'lr'"]),
    "negative lr": (["optim.lr=-1"], ["optim.lr", "-1", "greater than 0"]),
    "precision": (["precision=fp8"], ["precision", "'fp8'", "'bf16'"]),
    "backend name": (["distributed.backend=horovod"], ["distributed.backend", "'ddp'"]),
    "single with many workers": (["distributed.backend=single", "distributed.workers=4"], ["distributed.backend 'single'", "workers is 4"]),
    "zero stage without deepspeed": (["distributed.backend=ddp", "distributed.zero_stage=2"], ["zero_stage 2 needs backend 'deepspeed'"]),
    "deepspeed without stage": (["distributed.backend=deepspeed"], ["zero_stage must be 1, 2 or 3"]),
    "offload params without zero3": (["distributed.backend=deepspeed", "distributed.zero_stage=2", "distributed.offload_params=true"], ["offload_params needs zero_stage 3"]),
    "mode contradicts monitor": (["checkpoint.mode=max"], ["checkpoint.mode 'max'", "use mode 'min'"]),
    "zero micro batch": (["training.micro_batch_size=0"], ["training.micro_batch_size", "0"]),
    "betas out of range": (["optim.betas=[0.9, 1.5]"], ["optim.betas", "[0, 1)"]),
    "class weights length": (["task.type=classification", "task.num_classes=3", "task.class_weights=[1, 2]", "model.name=classifier"], ["class_weights has 2 entries", "num_classes is 3"]),
    "halt past max": (["training.halt_at_step=5000"], ["halt_at_step 5000", "max_steps 1000"]),
    "run name with path": (["name=../escape"], ["name", "'../escape'"]),
    "wrong type": (["training.epochs=three"], ["training.epochs", "'three'"]),
    "dropout range": (["model.dropout=1.5"], ["model.dropout", "1.5"]),
    "schedule name": (["schedule.name=exponential"], ["schedule.name", "'cosine'"]),
    "tokenizer": (["data.tokenizer=wordpiece"], ["data.tokenizer", "'bpe'"]),
    "model for task": (["task.type=vision_classification", "task.num_classes=4"], ["model.name 'gpt' cannot do task.type 'vision_classification'"]),
    "unknown model": (["model.name=gtp"], ["model.name: unknown model 'gtp'", "did you mean 'gpt'"]),
    "unknown loss": (["task.loss=cross_entropy"], ["task.loss: unknown loss 'cross_entropy'", "language_modeling"]),
    "unknown source": (["data.source=textfiles"], ["data.source", "did you mean 'text_files'"]),
    "unknown collator": (["data.collator=lmm"], ["data.collator", "did you mean 'lm'"]),
    "bad import path": (["model.name=no_such_pkg.mod:factory"], ["model.name", "cannot import module 'no_such_pkg.mod'"]),
    "model size": (["model.size=huge"], ["model.size: 'huge' unknown", "gpt2"]),
    "model kwargs": (["model.kwargs={heads: 2}"], ["model.kwargs: 'heads' is not an argument of GPT"]),
    "deepspeed json missing": (["distributed.backend=deepspeed", "distributed.zero_stage=2", "distributed.deepspeed_config=/nonexistent/ds.json"], ["distributed.deepspeed_config: '/nonexistent/ds.json' does not exist"]),
    "fsdp with fp16": (["distributed.backend=fsdp", "precision=fp16"], ["precision 'fp16' with distributed.backend 'fsdp'", "use bf16"]),
    "resume path": (["checkpoint.resume=/nonexistent/step_00000010"], ["checkpoint.resume", "does not exist"]),
    "set without equals": (["optim.lr"], ["--set 'optim.lr'", "KEY=VALUE"]),
    "hf without section": (["model.name=hf"], ["model.name 'hf' needs a model.hf section"]),
    "hf section without hf": (['model.hf={"path": "x"}'], ["model.hf is set but model.name is 'gpt'"]),
    "hf config without type": (["model.name=hf", 'model.hf={"config": {"n_layer": 2}}'], ["model.hf.config needs `model_type`"]),
    "init_from missing": (["model.init_from=/nonexistent/w.safetensors"], ["model.init_from: '/nonexistent/w.safetensors' does not exist"]),
    "activation checkpointing without blocks": (["model.name=classifier", "task.type=classification", "task.num_classes=2", "data.source=synthetic_classification", "model.activation_checkpointing=true"], ["model.activation_checkpointing: model 'classifier' has no blocks"]),
    "find_unused without ddp": (["distributed.backend=fsdp", "distributed.find_unused_parameters=true"], ["find_unused_parameters is a DDP option"]),
    "fsdp wrap without fsdp": (['distributed.fsdp={"wrap": ["Block"]}'], ["distributed.fsdp.wrap needs backend 'fsdp'"]),
    "max_time form": (["training.max_time=3 hours"], ["training.max_time", "'3 hours'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_rejected_with_a_clear_line(case, capsys):
    overrides, expected = CASES[case]
    sets = [x for o in overrides for x in ("--set", o)]
    assert main(["config", "validate", QUICK, *sets]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    assert all(line.startswith("tengine: error: ") for line in err.strip().splitlines())


def test_every_problem_is_listed_at_once(capsys):
    assert main(["config", "validate", QUICK, "--set", "optim.lr=-1", "--set", "precision=x",
                 "--set", "training.micro_batch_size=0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


def test_file_level_problems(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {name: gpt\n")
    missing_base = tmp_path / "child.yaml"
    missing_base.write_text("extends: presets/nope.yaml\n")
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- 1\n- 2\n")
    for path, text in ((tmp_path / "absent.yaml", "does not exist"), (bad_yaml, "not valid YAML"),
                       (missing_base, "extends 'presets/nope.yaml' not found"),
                       (a_list, "top level must be a mapping")):
        assert main(["config", "validate", str(path)]) == 2
        assert text in capsys.readouterr().err


def test_train_with_a_bad_config_does_no_work(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", QUICK, "--run-dir", str(run_dir), "--set", "optim.lr=0"]) == 2
    assert not run_dir.exists()


def test_console_script_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "tengine.cli", "train", QUICK, "--set",
                           "model.name=gtp"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "did you mean 'gpt'" in proc.stderr
