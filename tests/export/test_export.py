"""`tengine export`: every format within 1e-4 of PyTorch on real validation batches in a process
that cannot import tengine; a format that fails leaves no bundle; inference.py reproduces
PyTorch's predictions; verify catches one flipped byte; registry versions are sha256-checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tengine.config import load_config
from tengine.engine import run
from tengine.export import export
from tengine.export.parity import IsolatedRunFailed, run_isolated
from tests.conftest import REPO, STDLIB, TINY

TENGINE = [sys.executable, "-m", "tengine"]
SHORT = [*TINY, "training.max_steps=12", "checkpoint.every_n_steps=12"]
RUNS = {
    "gpt": [],
    "classifier": ["data.source=synthetic_classification", "task.type=classification",
                   "model.name=classifier", "data.num_samples=160", "training.micro_batch_size=16"],
    "cnn": ["data.source=synthetic_images", "task.type=vision_classification",
            "model.name=vision_cnn", "data.num_samples=160", "training.micro_batch_size=16"],
    "bpe": ["data.source=text_files", f"data.path={STDLIB}/bisect.py", "data.tokenizer=bpe",
            "data.bpe_vocab_size=300", "data.seq_len=16"],
    "hf": ["model.name=hf", 'model.hf={"config": {"model_type": "gpt2", "n_layer": 1, '
           '"n_embd": 32, "n_head": 2, "n_positions": 32}}'],
    "cummax": ["model.name=tests.export.models:cummax_gpt"],
    "shifted": ["model.name=tests.export.models:shifted_gpt"],
}


def config(root: Path, name: str):
    return load_config(REPO / "configs/quickstart.yaml",
                       [*SHORT, f"logging.root={root}", f"name={name}", *RUNS[name]])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A trained (12 steps) run dir per model, trained on first use."""
    root = tmp_path_factory.mktemp("runs")
    made: dict[str, Path] = {}

    class Runs(dict):
        def __missing__(self, name: str) -> Path:
            run(config(root, name))
            made[name] = root / name
            return made[name]

    return Runs()


@pytest.fixture(scope="module")
def bundles(runs, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("bundles")

    class Bundles(dict):
        def __missing__(self, name: str) -> dict:
            self[name] = export(runs[name], out / name, latency_iters=3, progress=lambda *a: None)
            return self[name]

    return Bundles()


def _val_batch(run_dir: Path) -> dict[str, torch.Tensor]:
    """The first 8 validation examples, as the run's data and collator make them."""
    from tengine.data import build_collator, build_data
    from tengine.data.context import DataContext

    cfg = load_config(run_dir / "config.yaml")
    data = build_data(cfg.data, cfg.task, DataContext(run_dir=None, saved=run_dir))
    items = [data.val[i] for i in range(8)]
    return build_collator(cfg.data.collator, cfg.task.type, data.pad_id)(items)


@pytest.mark.parametrize("name", ["gpt", "classifier", "cnn", "hf"])
def test_every_format_matches_pytorch_on_real_batches_at_every_shape(bundles, runs, name):
    meta = bundles[name]
    bundle = Path(meta["bundle"])
    assert list(meta["formats"]) == ["safetensors", "pt2", "onnx"]
    text = name != "cnn"
    expected = {f"b{b}_s{s}" for b in (1, 3, 8) for s in (8, 17, 32)} if text else {"b1", "b3", "b8"}
    for fmt in meta["formats"]:
        cases = meta["parity"][fmt]["cases"]
        assert set(cases) == expected, fmt
        for case, c in cases.items():
            assert c["ok"] and c["max_abs"] <= 1e-4 and c["top1"] == 1.0, (fmt, case, c)
        if name in ("gpt", "hf"):
            assert all(c["kl"] < 1e-8 for c in cases.values())
    if name == "hf":  # the save_pretrained layout: transformers reads it (as inference.py does)
        import transformers

        assert meta["formats"]["safetensors"]["runtime"] == "hf"
        assert (bundle / "config.json").is_file()
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(bundle)).eval()
        ids = torch.from_numpy(np.load(bundle / "parity_inputs.npz")["b3_s17__input_ids"])
        from tengine.export.model import rebuild

        with torch.inference_mode():
            assert torch.allclose(hf(ids).logits, rebuild(bundle, meta)(ids).logits, atol=1e-5)
    else:
        assert meta["parity"]["safetensors"]["weights"]["ok"]  # bit-equal, read without tengine
    # the cases are the run's real validation examples, not random tensors
    npz = np.load(bundle / "parity_inputs.npz")
    real = _val_batch(runs[name])
    key = "input_ids" if text else "pixel_values"
    full = "b8_s32" if text else "b8"
    assert np.array_equal(npz[f"{full}__{key}"], real[key].numpy())
    # dynamic dims as declared, latency per runtime at batch 1 and 8
    assert meta["inputs"][0]["shape"][:2] == (["batch", "seq"] if text else ["batch", 3])
    runtimes = {"eager", "pt2", "onnx", *(["safetensors"] if name == "hf" else [])}
    assert set(meta["latency"]) == {"iters", *runtimes}  # safetensors: HF from_pretrained
    assert all(set(meta["latency"][f]) == {"b1", "b8"} for f in runtimes)
    # every file hashed; the documents a serving team reads
    listed = set(meta["files"]) | {"metadata.json", "metadata.sha256"}
    assert listed == {p.name for p in bundle.iterdir()}
    assert {"inference.py", "README.md", "requirements.txt", "health_report.json",
            "health_report.md", "model.onnx", "model.pt2", "model.safetensors"} <= listed
    assert ("config.json" in listed) == (name == "hf")
    health = json.loads((bundle / "health_report.json").read_text())
    assert all(c["ok"] for c in health["pre_export"].values())
    assert "onnxruntime==" in (bundle / "requirements.txt").read_text()
    assert meta["versions"]["onnxruntime"] and meta["opset"] == 18
    from safetensors import safe_open

    with safe_open(str(bundle / "model.safetensors"), "np") as f:
        assert f.metadata()["format"] == "pt"
        assert f.metadata()["config_sha256"] == meta["model"]["config_sha256"]


def test_the_cli_exports_a_run_and_verify_catches_one_flipped_byte(runs, tmp_path):
    out = tmp_path / "qs"
    proc = subprocess.run([*TENGINE, "export", str(runs["gpt"]), "--out", str(out),
                           "--latency-iters", "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onnx         b8_s32" in proc.stdout and "p50 ms" in proc.stdout
    assert f"bundle: {out}" in proc.stdout
    again = subprocess.run([*TENGINE, "export", str(runs["gpt"]), "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    ok = subprocess.run([*TENGINE, "export", "verify", str(copy), "--json"], capture_output=True,
                        text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    report = json.loads(ok.stdout.splitlines()[-1])
    assert report["ok"] and set(report["formats"]) == {"safetensors", "pt2", "onnx"}
    for f in report["formats"].values():
        assert f["max_abs"] <= 1e-4
    weights = copy / "model.onnx.data"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    bad = subprocess.run([*TENGINE, "export", "verify", str(copy)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1
    assert "model.onnx.data does not match its sha256" in bad.stderr
    # metadata.json lists every other file's hash: its own is in metadata.sha256
    shutil.copy(out / "model.onnx.data", copy / "model.onnx.data")
    meta = (copy / "metadata.json").read_text()
    (copy / "metadata.json").write_text(meta.replace('"max_abs": 0.0001', '"max_abs": 0.1'))
    bad = subprocess.run([*TENGINE, "export", "verify", str(copy)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and "metadata.json does not match its sha256" in bad.stderr


def test_inference_py_reproduces_pytorch_top1_without_tengine(bundles, runs, tmp_path):
    from tengine.export.model import rebuild

    # a language model from token ids, and from text through the run's own BPE tokenizer
    for name, args in (("gpt", ["--ids", "3,1,4,1,5,9,2,6"]), ("bpe", ["--text", "def insort"])):
        bundle = Path(bundles[name]["bundle"])
        model = rebuild(bundle, bundles[name])
        if name == "bpe":
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(runs["bpe"] / "tokenizer.json"))
            ids = tok.encode("def insort", add_special_tokens=False).ids
        else:
            ids = [int(x) for x in args[1].split(",")]
        with torch.inference_mode():
            ref = model(torch.tensor([ids]))[0, -1].topk(5).indices.tolist()
        for fmt in ("onnx", "pt2"):
            got = run_isolated(bundle, [*args, "--format", fmt, "--json"])["predictions"][0]
            assert got[0]["id"] == ref[0], (name, fmt)
            assert [p["id"] for p in got] == ref, (name, fmt)
    # a vision model from an image array
    bundle = Path(bundles["cnn"]["bundle"])
    model = rebuild(bundle, bundles["cnn"])
    images = _val_batch(runs["cnn"])["pixel_values"][:4]
    np.save(tmp_path / "images.npy", images.numpy())
    with torch.inference_mode():
        ref = model(images).argmax(-1).tolist()
    got = run_isolated(bundle, ["--image", str(tmp_path / "images.npy"), "--json"])
    assert [p[0]["id"] for p in got["predictions"]] == ref
    # and the isolated process really cannot import tengine
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "inference.py").write_text("import tengine\n")
    with pytest.raises(IsolatedRunFailed, match="ModuleNotFoundError|ImportError"):
        run_isolated(fake, [])


def test_an_op_onnx_cannot_export_fails_the_command_and_leaves_no_bundle(runs, tmp_path):
    out = tmp_path / "b" / "cummax"
    proc = subprocess.run([*TENGINE, "export", str(runs["cummax"]), "--out", str(out),
                           "--latency-iters", "0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "onnx: " in proc.stderr and "cummax" in proc.stderr
    assert "1 of 3 formats did not pass; no bundle written" in proc.stderr
    assert "pt2 parity ok" in proc.stdout  # torch.export took it: only onnx failed
    assert not out.exists() and list(out.parent.iterdir()) == []  # no temp dir either


def test_an_output_that_changes_under_export_fails_parity_with_the_table(runs, tmp_path):
    out = tmp_path / "shifted"
    proc = subprocess.run([*TENGINE, "export", str(runs["shifted"]), "--out", str(out),
                           "--latency-iters", "0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "2 of 3 formats did not pass" in proc.stderr
    rows = [ln for ln in proc.stderr.splitlines() if "FAIL: max abs error" in ln]
    assert {ln.split()[2] for ln in rows} == {"pt2", "onnx"}  # "tengine: error: pt2 b1_s8 …"
    assert len(rows) == 2 * 9  # every case of both formats, each with its figures
    assert any("1e-03" in ln or "1.00e-03" in ln for ln in rows)
    assert "safetensors  all 9" in proc.stderr and not out.exists()  # it passed: one row


def test_create_export_bundle_exports_a_model_in_memory(tmp_path):
    from safetensors.torch import load_file

    from tengine import TaskSpec
    from tengine.data import build_data
    from tengine.engine.run import model_for
    from tengine.export import create_export_bundle

    cfg = config(tmp_path, "gpt")
    model = model_for(cfg, build_data(cfg.data, cfg.task))
    path = create_export_bundle(model, cfg, TaskSpec.language_modeling(), None, tmp_path / "out",
                                formats=["safetensors", "onnx"], latency_iters=0,
                                progress=lambda *a: None)
    assert path == (tmp_path / "out" / "gpt-step_0").resolve()
    meta = json.loads((path / "metadata.json").read_text())
    assert list(meta["formats"]) == ["safetensors", "onnx"]
    saved = load_file(str(path / "model.safetensors"))
    own = model.state_dict()
    assert saved and all(torch.equal(saved[k], own[k]) for k in saved)
    from tengine.errors import ConfigError

    with pytest.raises(ConfigError, match="task_spec.type 'classification'"):
        create_export_bundle(model, cfg, TaskSpec.classification(2), None, tmp_path / "x")


def test_a_registered_version_is_exported_sha256_checked_and_gets_its_bundle_attached(runs, tmp_path):
    """--model NAME:production exports the registry's copy and attaches the bundle; an export
    job does the same through the control plane; one flipped byte in the artifact and both
    refuse it, leaving no bundle and no attachment."""
    from tengine import connect
    from tengine.control.artifacts import attach_bundle, register_checkpoint
    from tengine.control.runner import JobRunner
    from tengine.engine.artifact import pack
    from tengine.errors import Conflict

    store = f"sqlite:///{tmp_path}/control/tengine.db"
    client = connect(store_uri=store)
    run_dir = runs["gpt"]
    checkpoint = run_dir / "checkpoints" / "step_00000012"
    v1 = register_checkpoint(client.registry, "qs", checkpoint, pack=pack, run_dir=run_dir)
    client.registry.promote_model("qs", v1.version)
    out = tmp_path / "bundle"
    proc = subprocess.run([*TENGINE, "export", "--model", "qs:production", "--out", str(out),
                           "--formats", "safetensors,onnx", "--latency-iters", "0",
                           "--register", "qs", "--store", store, "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["registered"]["version"] == 1 and result["formats"] == ["safetensors", "onnx"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["source"]["kind"] == "registry" and meta["source"]["sha256"] == v1.sha256
    [attached] = client.registry.list_bundles("qs", "production")
    assert attached["uri"] == str(out) and attached["formats"] == ["safetensors", "onnx"]
    assert attached["figures"]["parity"]["onnx"]["max_abs"] <= 1e-4
    listed = subprocess.run([*TENGINE, "registry", "bundles", "qs", "--store", store],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and str(out) in listed.stdout

    # a bundle of v1's weights is not attached to another version
    other = run_dir / "other"
    shutil.copytree(checkpoint, other / "checkpoints" / "step_00000012")
    shutil.copy(run_dir / "config.yaml", other / "config.yaml")
    manifest = json.loads((other / "checkpoints/step_00000012/manifest.json").read_text())
    manifest["metrics"] = {"val_loss": 1.0}  # another registration: another artifact sha256
    (other / "checkpoints/step_00000012/manifest.json").write_text(json.dumps(manifest))
    v2 = register_checkpoint(client.registry, "qs", other / "checkpoints/step_00000012",
                             pack=pack, run_dir=other)
    with pytest.raises(Conflict, match="not from qs v2"):
        attach_bundle(client.registry, v2, out)
    wrong = subprocess.run([*TENGINE, "export", "--model", "qs:1", "--register", "qs:2", "--out",
                            str(tmp_path / "wrong"), "--store", store], capture_output=True,
                           text=True, timeout=120)  # refused before any work
    assert wrong.returncode == 2 and "not of qs v2" in wrong.stderr, wrong.stderr[-2000:]
    assert not (tmp_path / "wrong").exists() and "export: built" not in wrong.stdout

    # the control plane's export job: the same export, by a runner, attached to its version
    job = client.jobs.submit("export", {"model": "qs", "ref": "production",
                                        "formats": ["safetensors", "pt2"]})
    assert JobRunner(client, "r").run_one()
    done = client.jobs.get(job.id)
    assert done.state == "SUCCEEDED", (done.error, client.jobs.logs(job.id)[-15:])
    assert done.result["model"] == {"name": "qs", "version": 1}
    assert Path(done.result["bundle"]).parent == tmp_path / "control/artifacts/qs/bundles"
    assert len(client.registry.list_bundles("qs", 1)) == 2

    # one flipped byte in the registry's copy: the export and the job both refuse it
    weights = Path(v1.artifact_uri) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    refused = subprocess.run([*TENGINE, "export", "--model", "qs:production", "--out",
                              str(tmp_path / "refused"), "--store", store],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "sha256 mismatch" in refused.stderr, refused.stderr
    assert not (tmp_path / "refused").exists()
    job = client.jobs.submit("export", {"model": "qs", "ref": "production"})
    assert JobRunner(client, "r").run_one()
    failed = client.jobs.get(job.id)
    assert failed.state == "FAILED" and "sha256 mismatch" in failed.error
    assert len(client.registry.list_bundles("qs")) == 2


def test_bad_input_exits_2_before_any_work_naming_the_fix(runs, tmp_path):
    cases = [
        (["export", str(runs["gpt"]), "--formats", "safetensors,onxx"], "'onxx'"),
        (["export", str(tmp_path / "nowhere")], "does not exist; give a run dir"),
        (["export", str(tmp_path)], "is not a run dir (no config.yaml)"),
        (["export"], "give a run dir, a checkpoint or an artifact, or --model NAME:REF"),
        (["export", "verify", str(tmp_path)], "is not an export bundle (no metadata.json)"),
        (["export", "--model", "nope:production", "--store", f"sqlite:///{tmp_path}/c.db"],
         "nope"),
    ]
    for args, text in cases:
        proc = subprocess.run([*TENGINE, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and text in proc.stderr, (args, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "c.db"]  # nothing written but the store


def test_torchscript_is_opt_in_legacy_and_still_checked(runs, tmp_path):
    meta = export(runs["classifier"], tmp_path / "ts", formats=["torchscript"], latency_iters=0,
                  progress=lambda *a: None)
    assert list(meta["formats"]) == ["safetensors", "torchscript"]  # safetensors always
    assert meta["formats"]["torchscript"]["legacy"] is True
    assert all(c["ok"] and c["max_abs"] <= 1e-4
               for c in meta["parity"]["torchscript"]["cases"].values())
    assert "TorchScript is legacy" in (Path(meta["bundle"]) / "README.md").read_text()
    assert "torchscript" not in load_config(REPO / "configs/quickstart.yaml").export.formats


def test_verify_names_a_model_that_no_longer_computes_what_was_exported(bundles, tmp_path):
    """The weights hash fine but the rebuilt model's outputs are not the recorded ones (as
    after a tengine or torch upgrade that changed the model code): verify says so."""
    from tengine.export.verify import VerifyFailed, verify
    from tengine.files import sha256_file

    copy = tmp_path / "b"
    shutil.copytree(bundles["classifier"]["bundle"], copy)
    meta = json.loads((copy / "metadata.json").read_text())
    case = next(iter(meta["reference"]))
    meta["reference"][case] = {**meta["reference"][case], "sha256": "0" * 64,
                               "mean_abs": meta["reference"][case]["mean_abs"] * 1.01}
    (copy / "metadata.json").write_text(json.dumps(meta))
    (copy / "metadata.sha256").write_text(sha256_file(copy / "metadata.json") + "  metadata.json\n")
    with pytest.raises(VerifyFailed, match=f"no longer gives the outputs recorded at export on {case}"):
        verify(copy, progress=lambda *a: None)


def test_a_run_dir_exports_its_best_checkpoint_by_its_own_monitor(tmp_path, monkeypatch):
    """Best by the run's checkpoint.monitor/mode from each manifest, found inside the run dir
    wherever the command runs (summary.json's paths are relative to where the run started)."""
    from tengine.export.source import _best_checkpoint

    run_dir = tmp_path / "runs" / "r"
    for step, acc in ((5, 0.2), (40, 0.9), (120, 0.5)):  # the newest is not the best
        ck = run_dir / "checkpoints" / f"step_{step:08d}"
        ck.mkdir(parents=True)
        (ck / "manifest.json").write_text(json.dumps({"step": step, "metrics": {"val_accuracy": acc}}))
    (run_dir / "config.yaml").write_text("checkpoint: {monitor: val_accuracy, mode: max}\n")
    (run_dir / "summary.json").write_text(json.dumps({"best_checkpoint": "runs/r/checkpoints/step_00000005"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _best_checkpoint(run_dir).name == "step_00000040"
    (run_dir / "config.yaml").write_text("checkpoint: {monitor: val_loss}\n")  # not recorded
    assert _best_checkpoint(run_dir).name == "step_00000120"  # then the newest


def test_sigterm_mid_export_leaves_no_temporary_bundle(runs, tmp_path):
    import signal
    import time

    out = tmp_path / "b" / "qs"
    proc = subprocess.Popen([*TENGINE, "export", str(runs["gpt"]), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out.parent.is_dir() and any(out.parent.iterdir())) and time.time() < deadline:
        time.sleep(0.05)  # the temporary bundle exists: the export is under way
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.stderr.read()[-2000:]
    assert not out.exists() and list(out.parent.iterdir()) == []
