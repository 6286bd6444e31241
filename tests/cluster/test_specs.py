"""Cluster specs: syntax and the fields that matter (no cloud, no network).

    .venv/bin/python -m pytest tests/cluster/test_specs.py -q

These files cannot be exercised here (no AWS, no Kubernetes); cluster/README.md says so. (The Colab
notebook is executed, on CPU, by tests/packaging/test_colab.py.)
What can be checked is checked: the launcher YAML against Ray's own schema, the KubeRay resources'
required fields, one shared mount path everywhere, the install order and pins against the
Makefile, and every `tengine train` command line through the real CLI parser and config schema.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tengine.cli import build_parser
from tengine.config import load_config
from tests.conftest import REPO

SHARED = "/mnt/shared"  # where the shared file system is mounted on every node and pod
RUN_ROOT = f"{SHARED}/runs"  # run dirs live under it
LAUNCHER = REPO / "cluster/ray-cluster.yaml"
KUBERAY = REPO / "cluster/kuberay"
DOCKERFILE = KUBERAY / "Dockerfile"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _makefile_torch_pin() -> str:
    return re.search(r"^TORCH\s*\?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)


def _dockerfile_arg(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)", DOCKERFILE.read_text(), re.M).group(1)


def _train(command: str):
    """Parse a `tengine train ...` line as the CLI does; return its args and resolved config."""
    argv = shlex.split(command)
    assert argv[0] == "tengine", command
    args = build_parser().parse_args(argv[1:])
    assert args.command == "train"
    sets = list(args.overrides)  # the same overrides cli.cmd_train adds
    if args.workers is not None:
        sets.append(f"distributed.workers={args.workers}")
    if args.gpus_per_worker is not None:
        sets.append(f"distributed.gpus_per_worker={args.gpus_per_worker}")
    if args.resume:
        sets.append(f"checkpoint.resume={args.resume}")
    return args, load_config(REPO / args.config, sets)


# --- Ray cluster launcher (`ray up`) -------------------------------------------------------------

@pytest.fixture(scope="module")
def launcher() -> dict:
    return _yaml(LAUNCHER)


def test_launcher_matches_rays_own_schema(launcher):
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")  # the schema file only: importing ray costs seconds
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray is not installed")
    schema_path = Path(spec.submodule_search_locations[0]) / "autoscaler/ray-schema.json"
    jsonschema.validate(launcher, json.loads(schema_path.read_text()))


def test_launcher_has_a_cpu_only_head_and_a_bounded_gpu_worker_type(launcher):
    assert launcher["cluster_name"] and launcher["provider"]["type"] == "aws"
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no worker node type offers GPUs"
    for t in gpu_types.values():
        assert 1 <= t["min_workers"] <= t["max_workers"] <= launcher["max_workers"]
        assert t["node_config"]["InstanceType"]
    assert sum(t.get("min_workers", 0) for t in types.values()) <= launcher["max_workers"]
    assert 0 < launcher["idle_timeout_minutes"] and launcher["provider"]["cache_stopped_nodes"] is False


def test_launcher_mounts_the_shared_run_root_on_every_node(launcher):
    common = launcher["setup_commands"]  # run on head and workers alike
    mounts = [c for c in common if "mount -t nfs4" in c]
    assert len(mounts) == 1 and re.search(rf":/ {SHARED}\)?$", mounts[0].strip())
    efs_region = re.search(r"\.efs\.([a-z0-9-]+)\.amazonaws\.com", mounts[0]).group(1)
    assert efs_region == launcher["provider"]["region"]
    assert any(f"mkdir -p {RUN_ROOT}" in c for c in common)
    assert launcher["file_mounts"]["~/tengine"] == "."
    assert {".venv", "runs"} <= set(launcher["rsync_exclude"])


def test_launcher_installs_like_the_makefile(launcher):
    common = launcher["setup_commands"]
    torch = _makefile_torch_pin()
    torch_at = next(i for i, c in enumerate(common) if f'pip install --quiet "{torch}"' in c)
    project_at = next(i for i, c in enumerate(common) if "pip install --quiet -e " in c)
    assert torch_at < project_at and "--constraint" in common[project_at]
    # the core install has no Ray, Accelerate or DeepSpeed: a node needs the extras
    assert '-e "$HOME/tengine[all]"' in common[project_at]
    assert '-e ".[all]"' in DOCKERFILE.read_text()
    constraints = next(c for c in common if "tengine-constraints.txt" in c and "printf" in c)
    assert torch in constraints and "ray==" in constraints
    assert _dockerfile_arg("TORCH") == torch  # the KubeRay image holds the same pin


def test_launcher_starts_ray_with_the_same_auth_mode_on_head_and_workers(launcher):
    head = " ".join(launcher["head_start_ray_commands"])
    workers = " ".join(launcher["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert "~/venv/bin/ray start --head" in head and "~/venv/bin/ray start --address" in workers
    assert launcher["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


# --- KubeRay -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pvc() -> dict:
    return _yaml(KUBERAY / "shared-pvc.yaml")


@pytest.fixture(scope="module")
def raycluster() -> dict:
    return _yaml(KUBERAY / "raycluster.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _yaml(KUBERAY / "rayjob.yaml")


def _pods(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]["spec"],
            *(g["template"]["spec"] for g in spec["workerGroupSpecs"])]


def test_shared_pvc_is_read_write_many(pvc):
    assert pvc["apiVersion"] == "v1" and pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"]


def test_raycluster_has_a_head_and_a_gpu_worker_group(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1" and raycluster["kind"] == "RayCluster"
    spec = raycluster["spec"]
    assert spec["rayVersion"] == _dockerfile_arg("RAY_VERSION")
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert not head["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
    gpu_groups = 0
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        resources = group["template"]["spec"]["containers"][0]["resources"]
        gpus = int(resources["limits"].get("nvidia.com/gpu", 0))
        # Kubernetes rejects an extended resource whose request differs from its limit.
        assert int(resources["requests"].get("nvidia.com/gpu", 0)) == gpus
        gpu_groups += gpus > 0
    assert gpu_groups
    images = {c["image"] for pod in _pods(spec) for c in pod["containers"]}
    assert len(images) == 1, f"one image (one Ray, one Python) on every pod, got {images}"


def test_every_ray_pod_mounts_the_shared_pvc_at_the_same_path(raycluster, rayjob, pvc):
    claim = pvc["metadata"]["name"]
    for spec in (raycluster["spec"], rayjob["spec"]["rayClusterSpec"]):
        for pod in _pods(spec):
            volumes = {v["name"]: v for v in pod["volumes"]}
            for container in pod["containers"]:
                shared = [m for m in container["volumeMounts"]
                          if volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName") == claim]
                assert [m["mountPath"] for m in shared] == [SHARED], container["name"]


def test_rayjob_runs_tengine_train_on_the_same_cluster_spec(rayjob, raycluster):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert spec["rayClusterSpec"] == raycluster["spec"], "rayjob.yaml's copy drifted"
    entrypoint = spec["entrypoint"]
    assert "tengine train" in entrypoint and "--workers" in entrypoint
    args, cfg = _train(entrypoint)
    assert (cfg.distributed.workers, cfg.distributed.gpus_per_worker) == (2, 1)
    assert cfg.distributed.backend == "ddp"
    assert args.run_dir.startswith(f"{RUN_ROOT}/")  # a filesystem path: preflight refuses s3://
    # Preflight counts the GPUs present when the job starts, so minReplicas must already cover it.
    present = sum(g["minReplicas"] * int(g["template"]["spec"]["containers"][0]["resources"]
                                         ["limits"].get("nvidia.com/gpu", 0))
                  for g in spec["rayClusterSpec"]["workerGroupSpecs"])
    assert present >= cfg.distributed.workers * cfg.distributed.gpus_per_worker
    # The job's working dir is the project baked into the image, so the config path resolves.
    workdir = re.search(r"^WORKDIR (\S+)", DOCKERFILE.read_text(), re.M).group(1)
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"] == workdir
    assert spec["shutdownAfterJobFinishes"] is True
