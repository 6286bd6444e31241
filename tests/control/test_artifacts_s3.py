"""The registry's artifact root on object storage: a local S3 server (moto, on loopback) stands
in for a bucket. A registered version lives only there, is fetched into a local cache to be
used, evaluates to the metrics it was registered with, and one flipped byte in the bucket is
refused (and never cached)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tengine.control import ModelRegistry, open_store
from tengine.control.artifacts import register_checkpoint, use_version
from tengine.errors import ArtifactMismatch

BUCKET = "models"


@pytest.fixture
def s3(monkeypatch, tmp_path):
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "TENGINE_ARTIFACT_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()


def test_a_version_registered_to_a_bucket_is_fetched_checked_and_refused_when_changed(
        s3, tmp_path, tiny_config):
    from tengine.config import load_config
    from tengine.engine import evaluate, run
    from tengine.engine.artifact import pack

    cfg = tiny_config("training.max_steps=10", "checkpoint.every_n_steps=10",
                      "training.eval_every_n_steps=10")
    run_dir = tmp_path / "run"
    summary = run(cfg, run_dir=str(run_dir))
    store = open_store(f"sqlite:///{tmp_path}/control.db")
    registry = ModelRegistry(store, artifact_root=f"s3://{BUCKET}/tengine")
    version = register_checkpoint(registry, "tiny", Path(summary["last_checkpoint"]), pack=pack)
    assert version.artifact_uri == f"s3://{BUCKET}/tengine/tiny/{version.sha256}"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]
            if not o["Key"].endswith("/")}  # (pyarrow writes directory markers too)
    prefix = f"tengine/tiny/{version.sha256}/"
    # the weights, the config, and the run's data profile (drift's reference for the version)
    assert keys == {prefix + f for f in ("config.yaml", "manifest.json", "model.safetensors",
                                         "profile.json", "profile_batch.npz")}
    again = register_checkpoint(registry, "tiny", Path(summary["last_checkpoint"]), pack=pack)
    assert again.artifact_uri == version.artifact_uri  # content-addressed: nothing re-uploaded

    shutil.rmtree(run_dir)  # only the bucket holds it now
    local = use_version(version)
    assert local == tmp_path / "cache" / version.sha256
    record = evaluate(load_config(local / "config.yaml"), local)
    assert record["val_loss"] == pytest.approx(version.metrics["val_loss"], abs=1e-6)

    # a byte flipped in the bucket: the download is refused and not cached
    key = prefix + "model.safetensors"
    data = bytearray(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(ArtifactMismatch, match="sha256 mismatch in model.safetensors"):
        use_version(version)
    assert not (tmp_path / "cache" / version.sha256).exists()
    store.close()
