"""The deployment files in deploy/ are valid and agree with each other and with the code.

Real tools where this machine has them (.ci/run installs them; under CI a
missing tool fails instead of skipping):

- ``docker compose config`` (or Debian's ``docker-compose``): the compose file
  is valid and interpolates; without the env file it refuses to render.
- ``nginx -t``: deploy/nginx.conf, with the compose host names replaced by
  127.0.0.1 in a temp copy.
- ``promtool``: prometheus.yml, the alert rules, and their unit tests
  (alerts_test.yml).
- ``systemd-analyze verify``: the unit file.
- kubernetes-validate (PyPI): every manifest against the Kubernetes schema, strict.

And without tools: the Dockerfile's stages, user, health check and entry
point; the Grafana provisioning and dashboard; every COLLAB_* value in the
compose file, the ConfigMap and the unit's example environment parses with
collab.config; timeouts and limits that must exceed the server's own
(nginx, terminationGracePeriodSeconds) do.
"""

from __future__ import annotations

import ast
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from collab.config import Settings, load_settings
from tests.deploy.files import (
    COMPOSE_FILE, DEPLOY, DOCKERFILE, ENV_EXAMPLE, GRAFANA, K8S, METRICS_MODULE, NGINX_CONF, OPERATIONS_DOC,
    PROMETHEUS, REPO, SYSTEMD_UNIT, alert_rules, compose_model, dashboard, dashboard_exprs, dockerfile_instructions,
    env_example,
    family, healthcheck_command, load_yaml, load_yaml_documents, nginx_blocks, nginx_config_for, nginx_seconds,
    nginx_size_bytes, referenced_metrics, require_tool,
)

TOOL_TIMEOUT_S = 120
NODES = ("collab-1", "collab-2")
DATA_DIR = "/var/lib/collab"
MULTIPART_MARGIN_BYTES = 64 * 1024
#: collab/workers.py: the supervisor of several workers waits drain + grace + 10 s before killing them.
SUPERVISOR_MARGIN_S = 10


def stop_budget_s(settings: Settings) -> float:
    """How long a graceful stop of one node may take."""
    workers = settings.workers or 2  # unset: one per core, i.e. a supervisor
    return settings.shutdown_drain_s + settings.shutdown_grace_s + (SUPERVISOR_MARGIN_S if workers > 1 else 0)


def clean_env() -> dict[str, str]:
    """Our environment without anything the deployment files interpolate."""
    names = set(env_example()) | {"COLLAB_IMAGE"}
    return {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_") and k not in names}


def run(command: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)


def settings_from(environ: dict[str, str]) -> Settings:
    """Settings exactly as a node given this environment would build them (ConfigError if invalid)."""
    return load_settings(environ={k: str(v) for k, v in environ.items()})


# --- docker compose ---------------------------------------------------------------------

def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    return [require_tool("docker-compose")]


def test_docker_compose_config_renders_with_the_example_env_file() -> None:
    result = run([*compose_command(), "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config"])
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    services = rendered["services"]
    assert set(services) >= {*NODES, "postgres", "redis", "nginx", "prometheus", "grafana", "migrate"}
    placeholder = env_example()["COLLAB_JWT_SECRET"]
    for node in NODES:
        assert services[node]["environment"]["COLLAB_JWT_SECRET"] == placeholder
        assert services[node]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert Path(services[node]["build"]["context"]).resolve() == REPO


def test_docker_compose_refuses_to_render_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = run([*compose_command(), "--env-file", str(empty), "-f", str(COMPOSE_FILE), "config"])
    assert result.returncode != 0, result.stdout
    assert re.search(r"COLLAB_JWT_SECRET|POSTGRES_PASSWORD|GRAFANA_ADMIN_PASSWORD", result.stderr), result.stderr


def test_compose_topology() -> None:
    model = compose_model()
    services = model["services"]
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert services["migrate"]["command"] == ["migrate"]
    nginx_address = services["nginx"]["networks"]["collab"]["ipv4_address"]
    subnet = ipaddress.ip_network(model["networks"]["collab"]["ipam"]["config"][0]["subnet"])
    assert ipaddress.ip_address(nginx_address) in subnet
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    data_volumes = set()
    for node in NODES:
        service = services[node]
        env = service["environment"]
        settings = settings_from(env)  # every value parses as the node would parse it
        assert settings.production and settings.host == "0.0.0.0"
        assert settings.redis_url and settings.redis_url.startswith("redis://redis:")
        assert settings.database_url and "@postgres:5432/" in settings.database_url
        assert settings.trusted_proxies == (f"{nginx_address}/32",)
        assert settings.metrics_port is not None and settings.metrics_host == "0.0.0.0"
        assert settings.data_dir == Path(DATA_DIR)
        assert not settings.migrate_on_start
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services["nginx"]["depends_on"][node]["condition"] == "service_healthy"
        # docker stop waits this long before SIGKILL: it must cover the whole graceful stop.
        grace = _compose_seconds(service["stop_grace_period"])
        assert grace > stop_budget_s(settings), (grace, settings)
        assert settings.workers >= 1, "set COLLAB_WORKERS: unset, a node starts one worker per host core"
        assert "ports" not in service, "nodes are reached through nginx only"
        data_volumes.update(v for v in service["volumes"] if v.endswith(f":{DATA_DIR}"))
    assert len(data_volumes) == 1, f"both nodes must share one data volume (attachments): {data_volumes}"
    # Only 127.0.0.1 is published.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def _compose_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_env_example_holds_every_required_secret_and_no_real_one() -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text()))
    example = env_example()
    assert set(example) == required, (sorted(example), sorted(required))
    for name, value in example.items():
        assert value.startswith("CHANGE-ME"), f"{name} in .env.example must be a placeholder"
        assert "$" not in value
    # The placeholder would still pass the server's own length check, so a test
    # deployment starts; production operators replace it (docs/operations.md).
    assert len(example["COLLAB_JWT_SECRET"].encode()) >= 32
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert ".env" in ignored


# --- nginx -------------------------------------------------------------------------------

def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    config = tmp_path / "nginx.conf"
    config.write_text(nginx_config_for(["127.0.0.1:8001", "127.0.0.1:8002"], listen="127.0.0.1:8080", prefix=tmp_path))
    result = run([nginx, "-t", "-p", str(tmp_path), "-c", str(config), "-e", str(tmp_path / "error.log")])
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_config_matches_the_server_limits() -> None:
    defaults = Settings()
    text = NGINX_CONF.read_text()
    blocks = nginx_blocks(text)
    locations = {header: body for header, body in blocks if header.startswith("location")}
    # A location with any proxy_set_header inherits none of the server's: keep them all in `server`.
    for header, body in locations.items():
        assert "proxy_set_header" not in body, f"{header} sets headers: it would lose X-Forwarded-For etc."
    server = next(body for header, body in blocks if header == "server")
    for needed in ("Host", "X-Forwarded-For", "X-Request-ID", "Upgrade", "Connection"):
        assert re.search(rf"proxy_set_header\s+{needed}\s", server), needed
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$proxy_add_x_forwarded_for;", server)

    upstream = next(body for header, body in blocks if header.startswith("upstream"))
    servers = re.findall(r"server\s+(\S+?):(\d+)\s+([^;]*);", upstream)
    assert [host for host, _, _ in servers] == list(NODES)
    compose_ports = {settings_from(compose_model()["services"][n]["environment"]).port for n in NODES}
    assert {int(port) for _, port, _ in servers} == compose_ports
    for _, _, params in servers:
        assert "max_fails=" in params and "fail_timeout=" in params
    keepalive = re.search(r"keepalive_timeout\s+(\S+);", upstream)
    assert keepalive and nginx_seconds(keepalive[1]) < defaults.keep_alive_timeout_s

    body_limit = re.search(r"client_max_body_size\s+(\S+);", server)
    assert body_limit, "client_max_body_size"
    assert nginx_size_bytes(body_limit[1]) >= defaults.max_upload_bytes + MULTIPART_MARGIN_BYTES

    ws = locations["location = /ws"]
    assert "proxy_buffering off;" in ws
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        value = re.search(rf"{directive}\s+(\S+);", ws)
        assert value and nginx_seconds(value[1]) > 10 * defaults.ws_idle_timeout_s, directive
    rest = locations["location /"]
    value = re.search(r"proxy_read_timeout\s+(\S+);", rest)
    assert value and nginx_seconds(value[1]) > defaults.response_timeout_s
    uploads = next(body for header, body in locations.items() if "attachments" in header)
    assert "proxy_request_buffering off;" in uploads
    value = re.search(r"proxy_read_timeout\s+(\S+);", uploads)
    assert value and nginx_seconds(value[1]) > defaults.attachment_transfer_timeout_s
    # Never retry a request that may have been applied.
    upstream_retry = re.search(r"proxy_next_upstream\s+([^;]*);", server)
    assert upstream_retry and "non_idempotent" not in upstream_retry[1]


# --- Prometheus and Grafana ------------------------------------------------------------

def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    config = (PROMETHEUS / "prometheus.yml").read_text().replace(
        "/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml"),
    )
    (tmp_path / "prometheus.yml").write_text(config)
    checked = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "rules found" in checked.stdout
    tested = run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, with Grafana's variables filled in, as a recording rule for promtool to parse."""
    promtool = require_tool("promtool")
    rules = []
    for n, expr in enumerate(dashboard_exprs()):
        if expr.startswith("label_values("):
            continue
        concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        rules.append({"record": f"dashboard:query_{n}", "expr": concrete})
    assert rules
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run([promtool, "check", "rules", str(tmp_path / "dashboard_rules.yml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_every_node_on_its_metrics_port() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "collab")
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    services = compose_model()["services"]
    expected = []
    for node in NODES:
        settings = settings_from(services[node]["environment"])
        assert settings.metrics_port is not None
        # Worker n of a node serves its metrics on COLLAB_METRICS_PORT + n (collab/workers.py).
        expected.extend(f"{node}:{settings.metrics_port + slot}" for slot in range(settings.workers))
    assert targets == expected
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_every_alert_is_labelled_annotated_and_documented() -> None:
    doc = OPERATIONS_DOC.read_text()
    names = []
    for rule in alert_rules():
        names.append(rule["alert"])
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert f"`{rule['alert']}`" in doc, f"docs/operations.md does not explain {rule['alert']}"
    assert len(names) == len(set(names))


def test_dashboards_and_alerts_use_metrics_that_collab_defines() -> None:
    """Static half of the check (the smoke test scrapes a live node for the other half)."""
    source = METRICS_MODULE.read_text()
    for name in referenced_metrics():
        if name.startswith(("process_", "python_")):
            continue  # prometheus_client's process collector
        assert f'"{family(name)}"' in source, f"{name} is not defined in collab/metrics.py"


def test_grafana_provisioning_and_dashboard() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [d["type"] for d in datasources] == ["prometheus"]
    source = datasources[0]
    assert source["url"] == "http://prometheus:9090"
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "collab.yml")["providers"]
    grafana = compose_model()["services"]["grafana"]
    mounted = {v.split(":")[1] for v in grafana["volumes"]}
    assert providers[0]["options"]["path"] in mounted and "/etc/grafana/provisioning" in mounted

    board = dashboard()
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == source["uid"]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in ("collab_http_requests_total", "collab_http_request_duration_seconds_bucket",
                   "collab_ws_connections", "collab_actor_inbox_depth", "collab_actor_commit_seconds_bucket",
                   "collab_ratelimit_decisions_total"):
        assert metric in exprs, f"the dashboard has no panel on {metric}"
    titles = " | ".join(p["title"].lower() for p in panels)
    assert "fan-out" in titles


# --- Dockerfile ----------------------------------------------------------------------------

def test_dockerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    instructions = dockerfile_instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for i, a in instructions if i == "ARG" and "=" in a}
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    froms = [a for i, a in instructions if i == "FROM"]
    assert len(froms) == 2 and froms[0] == "${PYTHON_IMAGE} AS builder" and froms[1] == "${PYTHON_IMAGE}"
    final_start = max(n for n, (i, _) in enumerate(instructions) if i == "FROM")
    final = instructions[final_start:]
    builder = instructions[:final_start]
    assert any(i == "RUN" and "pip wheel" in a for i, a in builder)
    # No compiler, no package installs in the image that ships.
    for instruction, arguments in final:
        builds = re.search(r"apt-get|apk |pip install|gcc|build-essential", arguments)
        assert not (instruction == "RUN" and builds), arguments
    copies = [a for i, a in final if i == "COPY"]
    assert copies == ["--from=builder /opt/collab /opt/collab"]
    users = [a for i, a in final if i == "USER"]
    assert users and re.fullmatch(r"\d+:\d+", users[-1]) and int(users[-1].split(":")[0]) > 0
    assert [i for i, _ in final].index("USER") > max(n for n, (i, _) in enumerate(final) if i == "RUN")
    env = " ".join(a for i, a in final if i == "ENV")
    assert "COLLAB_HOST=0.0.0.0" in env and f"COLLAB_DATA_DIR={DATA_DIR}" in env
    assert [a for i, a in final if i == "VOLUME"] == [f'["{DATA_DIR}"]']
    assert [a for i, a in final if i == "ENTRYPOINT"] == ['["collab"]']
    assert [a for i, a in final if i == "CMD"] == ['["serve"]']
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"] and "/health" in command[2]
    ast.parse(command[2])  # the one-liner is valid Python


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "an allowlist: nothing enters the context unless listed"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for instruction, arguments in dockerfile_instructions():
        if instruction == "COPY" and not arguments.startswith("--from"):
            copied.update(arguments.split()[:-1])
    assert copied == allowed, (copied, allowed)
    for secret_place in (".env", ".collab", "deploy/.env", ".venv"):
        assert secret_place not in allowed


def test_the_image_user_matches_kubernetes_and_the_volume() -> None:
    user = [a for i, a in dockerfile_instructions() if i == "USER"][-1]
    uid, gid = (int(x) for x in user.split(":"))
    pod = _k8s("deployment.yaml")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["fsGroup"] == gid
    assert re.search(rf"useradd [^\n]*--uid {uid}\b", DOCKERFILE.read_text())


@pytest.mark.slow
def test_the_wheel_the_builder_stage_makes_carries_migrations_and_web_files(tmp_path: Path) -> None:
    """Build the wheel from exactly the files .dockerignore lets into the context."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, context / name)
    for folder in ("collab", "migrations"):
        shutil.copytree(REPO / folder, context / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "--wheel-dir",
         str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / "wheels").glob("collab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {p.name for p in (REPO / "migrations").glob("*.sql")}
    assert migrations and {f"collab/migrations/{m}" for m in migrations} <= names
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "collab").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc",)}
    missing = sorted(shipped - names)
    assert not missing, f"files under collab/ the image would lack: {missing}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "collab = collab.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_every_library_the_server_imports_is_a_declared_dependency() -> None:
    """The image installs only pyproject's dependencies: an undeclared import would crash it at start.

    Follows the imports of collab/cli.py and collab/server.py through the
    package (the SDK in collab/client is not part of the server and is not
    followed unless the server imports it).
    """
    pyproject = (REPO / "pyproject.toml").read_text()
    declared = _requirement_closure(_declared_dependencies(pyproject))
    providers = metadata.packages_distributions()
    undeclared: dict[str, list[str]] = {}
    for path, module in _server_imports():
        dists = {_normalize(d) for d in providers.get(module, [])}
        if not dists & declared:
            undeclared.setdefault(module, []).append(path.relative_to(REPO).as_posix())
    assert not undeclared, f"imported but not in [project.dependencies] (nor required by one): {undeclared}"


def _server_imports() -> list[tuple[Path, str]]:
    """(file, third-party top-level module) for every file the server's entry points reach."""
    todo = [REPO / "collab" / "cli.py", REPO / "collab" / "server.py"]
    seen: set[Path] = set()
    found = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imported_modules(path):
            top = module.split(".")[0]
            if top == "collab":
                todo.extend(_module_files(module))
            elif top not in sys.stdlib_module_names:
                found.append((path, top))
    assert len(seen) > 20, "the import walk found too little of the package"
    return found


def _module_files(module: str) -> list[Path]:
    base = REPO.joinpath(*module.split("."))
    candidates = [base.with_suffix(".py"), base / "__init__.py"]
    files = [c for c in candidates if c.exists()]
    parent = base.parent.with_suffix(".py")  # `from collab.x import name`: name may be an attribute
    if not files and parent.exists():
        files.append(parent)
    return files


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                parts = path.relative_to(REPO).parent.parts
                package = parts[: len(parts) - node.level + 1]
                base = ".".join(package) + "." + node.module
            else:
                base = node.module
            modules.add(base)
            if base.startswith("collab"):
                modules.update(f"{base}.{alias.name}" for alias in node.names)
    return modules


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_dependencies(pyproject: str) -> set[str]:
    import tomllib

    deps = tomllib.loads(pyproject)["project"]["dependencies"]
    return {_normalize(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps}


def _requirement_closure(roots: set[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement:
                continue
            todo.append(_normalize(re.split(r"[<>=!~;\[ (]", requirement, maxsplit=1)[0]))
    return seen


# --- Kubernetes ---------------------------------------------------------------------------

def _k8s(name: str) -> dict[str, Any]:
    [document] = load_yaml_documents(K8S / name)
    return document


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("kubernetes-validate is not installed (pip install -e '.[dev]')")
    return kubernetes_validate


def _manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_kubernetes_manifest_is_valid(path: Path) -> None:
    kubernetes_validate = _kubernetes_validate()
    for document in load_yaml_documents(path):
        kubernetes_validate.validate(document, "1.30.0", strict=True)


def test_kubernetes_validation_would_catch_a_typo() -> None:
    kubernetes_validate = _kubernetes_validate()
    deployment = _k8s("deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


def test_kustomization_lists_the_manifests_but_no_secret() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    resources = set(kustomization["resources"])
    assert all((K8S / r).exists() for r in resources)
    assert "secret.example.yaml" not in resources and "job-migrate.yaml" not in resources
    kinds = {_k8s(r)["kind"] for r in resources}
    assert kinds >= {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    image = _k8s("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] in {i["name"] for i in kustomization["images"]}


def test_deployment_probes_resources_and_graceful_stop() -> None:
    config = _k8s("configmap.yaml")["data"]
    secret = _k8s("secret.example.yaml")["stringData"]
    settings = settings_from({**config, **secret})
    assert settings.production and settings.trusted_proxies and settings.host == "0.0.0.0"
    assert settings.metrics_port is not None
    assert all(value.count("CHANGE-ME") for value in secret.values()), "the Secret template holds placeholders only"

    deployment = _k8s("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == settings.port and ports["metrics"] == settings.metrics_port
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert settings.workers == 1, "one process per pod: unset, a pod starts one worker per core of its node"
    stop_s = float(sleep[1]) + stop_budget_s(settings)
    assert pod["terminationGracePeriodSeconds"] > stop_s + 5, (pod["terminationGracePeriodSeconds"], stop_s)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[str(settings.data_dir)] == "data"
    claim = next(v for v in pod["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"]
    pvc = _k8s("pvc.yaml")
    assert pvc["metadata"]["name"] == claim and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e] == ["collab-config"]
    assert [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e] == ["collab-secrets"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_service_pdb_and_hpa_select_the_deployment() -> None:
    deployment = _k8s("deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _k8s("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pdb = _k8s("pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = _k8s("hpa.yaml")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "collab"}
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    ingress = _k8s("ingress.yaml")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    body = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert nginx_size_bytes(body) >= Settings().max_upload_bytes + MULTIPART_MARGIN_BYTES


# --- systemd --------------------------------------------------------------------------------

def _unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in SYSTEMD_UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    collab = Path(sys.executable).with_name("collab")
    unit = tmp_path / "collab.service"
    unit.write_text(SYSTEMD_UNIT.read_text().replace("/opt/collab/bin/collab", str(collab)))
    result = run([analyze, "verify", str(unit)])
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if str(unit) in line or "collab.service" in line]
    assert not problems, problems


def test_systemd_unit_is_hardened_and_reads_its_environment_file() -> None:
    unit = _unit()
    assert unit["ExecStart"] == ["/opt/collab/bin/collab serve"]
    assert unit["EnvironmentFile"] == ["/etc/collab/collab.env"]
    assert unit["User"] == ["collab"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes"}.items():
        assert unit[key] == [value], key
    assert unit["CapabilityBoundingSet"] == [""]
    assert "ProcSubset" not in unit, "the metrics' process collector needs /proc/stat"
    data_dir = next(v.split("=", 1)[1] for v in unit["Environment"] if v.startswith("COLLAB_DATA_DIR="))
    assert unit["ReadWritePaths"] == [data_dir]
    assert unit["RestartPreventExitStatus"] == ["2"], "exit 2 is bad configuration: restarting cannot help"
    # The example environment in the unit's comments parses, and the stop timeout covers it.
    example = dict(
        line[2:].split("#")[0].strip().split("=", 1)
        for line in SYSTEMD_UNIT.read_text().splitlines()
        if re.match(r"#   COLLAB_[A-Z_]+=", line)
    )
    example = {k: v for k, v in example.items() if not v.endswith("...")}
    settings = settings_from({**example, "COLLAB_DATABASE_URL": "postgresql://db/collab",
                              "COLLAB_JWT_SECRET": "x" * 32, "COLLAB_DATA_DIR": data_dir})
    stop_s = float(unit["TimeoutStopSec"][0])
    assert stop_s > stop_budget_s(settings)


# --- README --------------------------------------------------------------------------------

def test_readme_points_operators_at_the_deployment_files() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deploying", 1)
    assert len(section) == 2, "README.md has no 'Deploying' section"
    body = section[1].split("\n## ", 1)[0]
    for target in ("deploy/", "docs/operations.md"):
        assert target in body, target
    deploy_readme = (DEPLOY / "README.md").read_text()
    for name in ("Dockerfile", "docker-compose.yml", "nginx.conf", "k8s/", "systemd/", "prometheus/", "grafana/"):
        assert name in deploy_readme, name
