"""The production stack: docker-compose.yml, its Dockerfiles and its monitoring files.

``docker-compose config`` validates and resolves the file (it refuses to without the
secrets; with them, with the ``gpu`` and ``grafana`` profiles, and from .env.example
filled in); the resolved YAML is then checked for what the README promises: a durable
Redis whose password is on no command line, a default stack with no GPU service, one GPU
per GPU worker, a training worker, health checks that ask each process itself, and
Prometheus finding every replica of every bucketvision process. Without docker-compose the
tests skip, except under CI, where they fail.
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


SECRETS = {
    "REDIS_PASSWORD": "redis-secret",
    "AWS_ACCESS_KEY_ID": "bv-key",
    "AWS_SECRET_ACCESS_KEY": "s3-secret-123",
    "FLOWER_BASIC_AUTH": "admin:flower-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}


@pytest.fixture(scope="module")
def empty_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def secrets_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "secrets.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in SECRETS.items()))
    return path


@pytest.fixture(scope="module")
def stack(secrets_env: Path) -> dict[str, Any]:
    """docker-compose.yml resolved with the secrets and every profile on."""
    return _resolved("--profile", "gpu", "--profile", "grafana", env_file=secrets_env)


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


def test_config_refuses_to_start_without_the_secrets(empty_env: Path) -> None:
    result = _compose("config", "-q", env_file=empty_env)
    assert result.returncode != 0 and "set REDIS_PASSWORD in .env" in result.stderr


def test_config_is_valid_by_default_and_with_every_profile(secrets_env: Path) -> None:
    for profiles in ((), ("--profile", "gpu"), ("--profile", "gpu", "--profile", "grafana")):
        result = _compose(*profiles, "config", "-q", env_file=secrets_env)
        assert result.returncode == 0, (profiles, result.stderr)


def test_no_secret_has_a_default() -> None:
    text = COMPOSE_FILE.read_text()
    assert "change-me" not in text
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"(:?[-?])?", text)
        assert uses and all(kind == ":?" for kind in uses), f"{name} must be ${{{name}:?...}}"


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
    assert services["grafana"]["profiles"] == ["grafana"]
    for name in ("worker-gpu0", "worker-gpu1", "worker-training"):
        assert services[name]["profiles"] == ["gpu"], f"{name} runs only with --profile gpu"
    for name in ("worker-cpu", "watcher", "beat"):
        assert not services[name].get("profiles"), f"{name} must start without a profile"


def test_the_default_stack_needs_no_gpu(services: dict[str, Any]) -> None:
    default = {name: svc for name, svc in services.items() if not svc.get("profiles")}
    assert "worker-cpu" in default
    for name, service in default.items():
        assert not _gpu_devices(service), f"{name} reserves a GPU without --profile gpu"


def test_redis_is_durable_and_its_password_is_on_no_command_line(
    services: dict[str, Any],
) -> None:
    redis = services["redis"]
    script = " ".join(_command(redis))
    for option in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert option in script
    assert "requirepass" in script and "REDIS_PASSWORD" in script
    assert SECRETS["REDIS_PASSWORD"] not in script, "the password is written to a file"
    assert redis["environment"]["REDIS_PASSWORD"] == SECRETS["REDIS_PASSWORD"]
    assert any(target == "/data" for _, target in _mounts(redis))
    assert redis["healthcheck"]["test"]
    for name, service in services.items():
        for secret in SECRETS.values():
            assert secret not in " ".join(_command(service)), f"{name}: a secret on its command"


def test_every_process_reaches_redis_with_its_password(services: dict[str, Any]) -> None:
    password = SECRETS["REDIS_PASSWORD"]
    for name in (*_workers(services), "beat", "watcher"):
        url = services[name]["environment"]["BV_BROKER_URL"]
        assert url == f"redis://:{password}@redis:6379/0", name
    assert services["flower"]["environment"]["CELERY_BROKER_URL"].startswith(
        f"redis://:{password}@"
    )


def test_env_example_filled_in_flows_into_the_services(tmp_path: Path) -> None:
    filled = tmp_path / ".env"
    lines = ENV_EXAMPLE.read_text().splitlines()
    filled.write_text(
        "\n".join(
            f"{line}{SECRETS[line[:-1]]}" if line.endswith("=") and line[:-1] in SECRETS else line
            for line in lines
        )
    )
    resolved = _resolved("--profile", "gpu", env_file=filled)["services"]
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    password = SECRETS["REDIS_PASSWORD"]
    assert resolved["redis"]["environment"]["REDIS_PASSWORD"] == password
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
    settings_vars = {  # BV_BROKER_URL is built from REDIS_SCHEME, REDIS_PASSWORD, REDIS_HOST...
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
        "--wait-for-model",
    ]


def test_the_watcher_reads_minios_bucket_events_from_redis(services: dict[str, Any]) -> None:
    """MinIO publishes incoming/'s new objects to a Redis list (access format) and the watcher
    pops it; the URI with the Redis password is in the environment, not the command line."""
    minio = services["minio"]["environment"]
    assert minio["MINIO_NOTIFY_REDIS_ENABLE_BV"] == "on"
    assert minio["MINIO_NOTIFY_REDIS_FORMAT_BV"] == "access"
    assert minio["MINIO_NOTIFY_REDIS_ADDRESS_BV"] == "redis:6379"
    key = minio["MINIO_NOTIFY_REDIS_KEY_BV"]
    assert minio["MINIO_NOTIFY_REDIS_QUEUE_DIR_BV"].startswith("/data/")
    init = " ".join(services["minio-init"]["entrypoint"])
    assert "mc event add" in init and "arn:minio:sqs::bv:redis" in init
    assert "--prefix incoming/" in init and "--event put" in init
    events = services["watcher"]["environment"]["BV_WATCH_EVENTS"]
    password = services["redis"]["environment"]["REDIS_PASSWORD"]
    assert events == f"redis://:{password}@redis:6379/0/{key}"
    assert password not in " ".join(_command(services["watcher"]))
    assert services["watcher"]["environment"]["BV_BROKER_URL"]  # the shared settings too


def test_every_bucketvision_process_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name in (*_workers(services), *BUCKETVISION_IMAGE_SERVICES):
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
    for name in ("redis", "minio", "prometheus"):
        assert services[name]["healthcheck"]["test"], name


def test_no_healthcheck_of_a_bucketvision_process_is_only_a_redis_ping(
    services: dict[str, Any],
) -> None:
    """Each asks its own process: a worker's Celery ping, the watcher's last cycle, beat's lease."""
    asks = {name: "worker" for name in _workers(services)} | {"watcher": "watcher", "beat": "beat"}
    for name, check in asks.items():
        test = " ".join(str(part) for part in services[name]["healthcheck"]["test"])
        assert f"bucketvision health {check}" in test, f"{name}: {test}"
        assert ".ping()" not in test
    flower = " ".join(services["flower"]["healthcheck"]["test"])
    assert "5555/healthcheck" in flower


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


def test_prometheus_finds_every_replica_of_every_bucketvision_process(
    services: dict[str, Any],
) -> None:
    """DNS discovery (a service name resolves to each replica), not one static target."""
    config = _yaml().safe_load(PROMETHEUS_FILE.read_text())
    discovered = {
        (name, int(group["port"]))
        for job in config["scrape_configs"]
        for group in job.get("dns_sd_configs", [])
        for name in group["names"]
    }
    port = int(services["watcher"]["environment"]["BV_METRICS_PORT"])
    for name in (*_workers(services), "watcher", "beat"):
        assert int(services[name]["environment"]["BV_METRICS_PORT"]) == port
        assert (name, port) in discovered, f"prometheus does not discover {name}"
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    alerts = ROOT / "infra" / "prometheus" / "alerts.yml"
    assert (str(alerts), "/etc/prometheus/alerts.yml") in _mounts(services["prometheus"])
    rules = {
        rule["alert"]: rule["expr"] for group in _yaml().safe_load(alerts.read_text())["groups"]
        for rule in group["rules"]
    }  # fmt: skip
    assert "bv_queue_depth" in rules["BucketvisionQueueGrowing"]
    assert "bv_dead_letter_batches_total" in rules["BucketvisionDeadLetters"]
    assert 'up{job="bucketvision-workers"}' in rules["BucketvisionNoWorker"]
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
    assert re.search(r"python:3\.11\.\d+-slim", text), "the base image is pinned to a patch"
    assert 'bucketvision", "health", "worker' in text, "the image's check asks the worker"
    copies = [index for index, line in enumerate(lines) if line.startswith("COPY ")]
    installs = [index for index, line in enumerate(lines) if "pip install -r" in line]
    source = next(index for index in copies if "producer" in lines[index])
    assert installs and installs[0] < source, "the dependency layer comes before the source"


def test_ops_extra_has_flower_and_workers_export_metrics() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(req.startswith("flower") for req in extras["ops"])
    assert any(req.startswith("prometheus-client") for req in extras["worker"])
