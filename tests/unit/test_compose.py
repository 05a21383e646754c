"""The production stack: docker-compose.yml, its Dockerfiles and its monitoring files.

``docker-compose config`` validates and resolves the file (with no .env, with
the compose profiles, and with .env.example); the resolved YAML is then checked
for what the README promises: a durable, password-protected Redis, one GPU per
GPU worker, a training worker, health checks, and Prometheus scraping every
bucketvision process. Without docker-compose the tests skip, except under CI,
where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS_FILE = ROOT / "infra" / "prometheus" / "prometheus.yml"
DASHBOARD_FILE = ROOT / "infra" / "grafana" / "dashboards" / "bucketvision.json"
DATASOURCE_FILE = ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
BUCKETVISION_IMAGE_SERVICES = ("beat", "watcher", "flower")
DASHBOARD_METRICS = (
    "bv_items_total",
    "bv_stage_seconds",
    "bv_batch_size",
    "bv_queue_wait_seconds",
    "bv_model_info",
    "bv_training_runs_total",
)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _missing(what: str) -> None:
    message = f"{what}; `apt-get install docker-compose` (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {message}")
    pytest.skip(message)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        _missing("PyYAML is not installed (it comes with the `local` extra)")
    return yaml


def _compose_variables() -> set[str]:
    """Every ${VAR} that docker-compose.yml interpolates (comments left out)."""
    found: set[str] = set()
    for line in COMPOSE_FILE.read_text().splitlines():
        if not line.lstrip().startswith("#"):
            found.update(_VARIABLE.findall(line.replace("$$", "")))
    return found


def _compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        _missing("docker-compose is not installed")
    # The caller's shell must not leak into the resolved file: drop every variable
    # the file reads and every COMPOSE_* switch, and read only the given env file.
    dropped = _compose_variables()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in dropped and not name.startswith("COMPOSE_")
    }
    return subprocess.run(
        [binary, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _resolved(*args: str, env_file: Path) -> dict[str, Any]:
    result = _compose(*args, "config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    return _yaml().safe_load(result.stdout)


@pytest.fixture(scope="module")
def empty_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def stack(empty_env: Path) -> dict[str, Any]:
    """docker-compose.yml resolved with no .env and every profile on."""
    return _resolved("--profile", "cpu", "--profile", "grafana", env_file=empty_env)


@pytest.fixture(scope="module")
def services(stack: dict[str, Any]) -> dict[str, Any]:
    return stack["services"]


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _option(command: list[str], name: str) -> str | None:
    for index, part in enumerate(command):
        if part == name and index + 1 < len(command):
            return command[index + 1]
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    return None


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume, in the short (v1) or the long (v2) syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            source, target = str(volume).split(":")[:2]
            found.append((source, target))
    return found


def _workers(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services.items() if name.startswith("worker")}


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return list(reservations.get("devices", []))


def test_config_is_valid_with_no_env_file(empty_env: Path) -> None:
    result = _compose("config", "-q", env_file=empty_env)
    assert result.returncode == 0, result.stderr


def test_config_is_valid_with_every_profile(empty_env: Path) -> None:
    result = _compose(
        "--profile", "cpu", "--profile", "grafana", "config", "-q", env_file=empty_env
    )
    assert result.returncode == 0, result.stderr


def test_the_whole_stack_is_there(services: dict[str, Any]) -> None:
    expected = {
        "redis",
        "minio",
        "minio-init",
        "worker-gpu0",
        "worker-gpu1",
        "worker-cpu",
        "worker-training",
        "beat",
        "watcher",
        "flower",
        "prometheus",
        "grafana",
    }
    assert expected <= set(services)
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    assert services["grafana"]["profiles"] == ["grafana"]
    for name in ("worker-gpu0", "worker-gpu1", "worker-training", "watcher", "beat"):
        assert not services[name].get("profiles"), f"{name} must start without a profile"


def test_redis_is_durable_and_needs_a_password(services: dict[str, Any]) -> None:
    redis = services["redis"]
    command = _command(redis)
    assert command[0] == "redis-server"
    assert _option(command, "--appendonly") == "yes"
    assert _option(command, "--appendfsync") == "everysec"
    assert _option(command, "--requirepass"), "redis must require a password"
    assert _option(command, "--maxmemory-policy") == "noeviction"
    assert any(target == "/data" for _, target in _mounts(redis))
    assert redis["healthcheck"]["test"]


def test_every_process_reaches_redis_with_its_password(services: dict[str, Any]) -> None:
    password = _option(_command(services["redis"]), "--requirepass")
    for name in (*_workers(services), "beat", "watcher"):
        url = services[name]["environment"]["BV_BROKER_URL"]
        assert url == f"redis://:{password}@redis:6379/0", name
    assert services["flower"]["environment"]["CELERY_BROKER_URL"].startswith(
        f"redis://:{password}@"
    )


def test_env_example_password_flows_into_the_broker_url() -> None:
    resolved = _resolved("--profile", "cpu", env_file=ENV_EXAMPLE)["services"]
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    password = example["REDIS_PASSWORD"]
    assert _option(_command(resolved["redis"]), "--requirepass") == password
    assert resolved["worker-gpu0"]["environment"]["BV_BROKER_URL"] == (
        f"redis://:{password}@redis:6379/0"
    )
    bucket = example["BV_BUCKET"]
    assert resolved["watcher"]["environment"]["BV_MODELS_URI"] == f"s3://{bucket}/models/"


def test_env_example_documents_every_variable() -> None:
    documented = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    settings_vars = {
        "BV_BROKER_URL",
        "BV_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "BV_MODELS_URI",
        "BV_BATCH_SIZE",
        "BV_MAX_IMAGE_PIXELS",
        "BV_MAX_OBJECT_BYTES",
        "BV_METRICS_PORT",
        "BV_VISIBILITY_TIMEOUT",
        "BV_MAX_ATTEMPTS",
        "BV_IO_THREADS",
        "BV_MODEL_REFRESH_SECONDS",
        "BV_SCHEDULE_FILE",
        "BV_LOG_FORMAT",
    }
    assert not (_compose_variables() | settings_vars) - documented


def test_one_gpu_per_gpu_worker(services: dict[str, Any]) -> None:
    gpu_workers = {name: svc for name, svc in services.items() if name.startswith("worker-gpu")}
    assert len(gpu_workers) >= 2
    reserved: list[str] = []
    for name, service in gpu_workers.items():
        devices = _gpu_devices(service)
        assert len(devices) == 1, f"{name} must reserve exactly one device"
        device = devices[0]
        assert device["driver"] == "nvidia"
        assert "gpu" in device["capabilities"]
        assert len(device["device_ids"]) == 1, f"{name}: one GPU per worker"
        reserved.extend(str(i) for i in device["device_ids"])
        command = _command(service)
        assert command[:2] == ["bucketvision", "worker"]
        assert _option(command, "--queues") == "inference"
        # Inside its container the one reserved GPU is always index 0.
        assert _option(command, "--gpus") == "0"
        assert service["build"]["dockerfile"].endswith("Dockerfile.gpu")
    assert len(set(reserved)) == len(reserved), f"two GPU workers share a GPU: {reserved}"


def test_cpu_worker_hides_gpus(services: dict[str, Any]) -> None:
    command = _command(services["worker-cpu"])
    assert "--cpu" in command and "--gpus" not in command
    assert not _gpu_devices(services["worker-cpu"])
    assert "inference" in (_option(command, "--queues") or "").split(",")


def test_training_worker_consumes_the_training_queue(services: dict[str, Any]) -> None:
    command = _command(services["worker-training"])
    assert command[:2] == ["bucketvision", "worker"]
    assert _option(command, "--queues") == "training"
    assert _option(command, "--concurrency") == "1"


def test_beat_and_watcher(services: dict[str, Any]) -> None:
    assert _command(services["beat"]) == ["bucketvision", "beat"]
    schedule = services["beat"]["environment"]["BV_SCHEDULE_FILE"]
    assert any(target == schedule for _, target in _mounts(services["beat"]))
    assert _command(services["watcher"]) == [
        "bucketvision",
        "watch",
        "--input",
        "s3://bucketvision/incoming/",
        "--task",
        "classify",
        "--output",
        "s3://bucketvision/results/",
    ]


def test_every_bucketvision_process_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name in (*_workers(services), *BUCKETVISION_IMAGE_SERVICES):
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
    for name in ("redis", "minio", "prometheus"):
        assert services[name]["healthcheck"]["test"], name


def test_services_wait_for_a_healthy_redis(services: dict[str, Any]) -> None:
    for name in (*_workers(services), "beat", "watcher"):
        depends = services[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["minio-init"]["condition"] == "service_completed_successfully", name


def test_published_ports_are_loopback_by_default(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this host"


def test_prometheus_scrapes_every_bucketvision_process(services: dict[str, Any]) -> None:
    config = _yaml().safe_load(PROMETHEUS_FILE.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job.get("static_configs", [])
        for target in group["targets"]
    }
    port = services["watcher"]["environment"]["BV_METRICS_PORT"]
    for name in (*_workers(services), "watcher", "beat"):
        assert services[name]["environment"]["BV_METRICS_PORT"] == port
        assert f"{name}:{port}" in targets, f"prometheus does not scrape {name}"
    assert (str(PROMETHEUS_FILE), "/etc/prometheus/prometheus.yml") in _mounts(
        services["prometheus"]
    )


def test_grafana_dashboard_shows_the_metrics() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    expressions = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    )
    for metric in DASHBOARD_METRICS:
        assert metric in expressions, f"no panel shows {metric}"
    assert re.search(r"by \(task, status\).*bv_items_total", expressions)
    for stage in ("download", "decode", "infer", "upload"):
        assert stage in DASHBOARD_FILE.read_text()
    datasource = _yaml().safe_load(DATASOURCE_FILE.read_text())["datasources"][0]
    uids = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {datasource["uid"]}


def _dockerfiles(services: dict[str, Any]) -> set[Path]:
    return {
        Path(service["build"]["context"]) / service["build"].get("dockerfile", "Dockerfile")
        for service in services.values()
        if "build" in service
    }


def test_every_image_is_built_from_a_dockerfile_in_the_repo(services: dict[str, Any]) -> None:
    dockerfiles = _dockerfiles(services)
    assert {path.name for path in dockerfiles} == {"Dockerfile.cpu", "Dockerfile.gpu"}
    for path in dockerfiles:
        assert path.is_file(), f"{path} does not exist"
    for name, service in services.items():
        if name.startswith("worker") or name in BUCKETVISION_IMAGE_SERVICES:
            assert "build" in service, f"{name} has no build"
    assert (ROOT / ".dockerignore").is_file()


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfile_is_multistage_nonroot_and_healthchecked(name: str) -> None:
    text = (ROOT / "infra" / "docker" / name).read_text()
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    stages = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(stages) >= 2, "builder and runtime stages"
    assert any("--from=builder" in line for line in lines)
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1] not in {"root", "0", "0:0"}, "the image must run as non-root"
    assert users[-1] == "bucketvision"
    assert any(line.upper().startswith("HEALTHCHECK ") for line in lines)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    wanted = re.search(r"ARG EXTRAS=(\S+)", text)
    assert wanted, "the extras to install are an ARG"
    for extra in wanted.group(1).split(","):
        assert extra in extras, f"{name} installs the unknown extra {extra!r}"
    assert ("gpu" in wanted.group(1).split(",")) == (name == "Dockerfile.gpu")
    assert "python:3.11-slim" in text


def test_ops_extra_has_flower_and_workers_export_metrics() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(req.startswith("flower") for req in extras["ops"])
    assert any(req.startswith("prometheus-client") for req in extras["worker"])
