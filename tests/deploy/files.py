"""What the deployment tests share: where the files are, how to read them, the tools.

The deployment files (deploy/) are checked with the real tools where this
machine has them (docker compose's ``config``, ``nginx -t``, ``promtool``,
``systemd-analyze``) and by reading them with PyYAML / json otherwise.
:func:`require_tool` skips a check whose tool is missing on a developer's
machine, but fails it under CI (``CI`` set), where .ci/run installs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NGINX_CONF = DEPLOY / "nginx.conf"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
K8S = DEPLOY / "k8s"
SYSTEMD_UNIT = DEPLOY / "systemd" / "collab.service"
OPERATIONS_DOC = REPO / "docs" / "operations.md"
METRICS_MODULE = REPO / "collab" / "metrics.py"


def require_tool(*names: str) -> str:
    """The path of the first of ``names`` found on PATH; skip (fail under CI) if none is."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{' / '.join(names)} not installed (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: under CI this check must run")
    pytest.skip(message)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def env_example() -> dict[str, str]:
    """deploy/.env.example as a mapping (comments and blank lines skipped)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:\?|:-|\?|-)(?P<arg>[^}]*))?\}")


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` (raises KeyError when required and unset)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if values.get(name):
            return values[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise KeyError(f"{name}: {arg}")
        return ""

    return _INTERPOLATION.sub(one, text)


def compose_model() -> dict[str, Any]:
    """The compose file with .env.example's placeholders filled in, anchors merged (PyYAML)."""
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env_example()))


# --- nginx -----------------------------------------------------------------------------

_UPSTREAM_SERVER = re.compile(r"^(\s*)server\s+\S+:\d+(\s+[^;]*)?;", re.MULTILINE)


def nginx_config_for(
    upstreams: list[str], *, listen: str, prefix: Path, balance: str | None = None,
) -> str:
    """deploy/nginx.conf for this machine: the given upstream addresses, a local
    listen address, and every path nginx writes under ``prefix``.

    ``balance`` replaces the balancing method (``"ip_hash"`` pins a client to one node).
    Everything else (locations, headers, timeouts) is the deployed file's own.
    """
    text = NGINX_CONF.read_text()
    servers = _UPSTREAM_SERVER.findall(text)
    assert servers, "deploy/nginx.conf has no upstream server lines"
    params = servers[0][1] or ""
    indent = servers[0][0]
    first = _UPSTREAM_SERVER.search(text)
    assert first is not None
    text = _UPSTREAM_SERVER.sub("", text)
    lines = "".join(f"{indent}server {address}{params};\n" for address in upstreams)
    text = text[:first.start()] + lines.rstrip("\n") + text[first.start():]
    text = re.sub(r"^(\s*)listen\s+80;", rf"\1listen {listen};", text, flags=re.MULTILINE)
    if balance is not None:
        text, count = re.subn(r"^(\s*)least_conn;", rf"\1{balance};", text, flags=re.MULTILINE)
        assert count == 1, "deploy/nginx.conf no longer says least_conn"
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp_paths, 1)
    head = f"pid {prefix / 'nginx.pid'};\n"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        head += "user root;\n"  # workers as root here: the temp dirs are private to this test
    return head + text


def nginx_blocks(text: str) -> list[tuple[str, str]]:
    """(header, body) of every ``location``/``upstream``/``server`` block, comments removed."""
    text = re.sub(r"#[^\n]*", "", text)
    blocks = []
    for match in re.finditer(r"\b(location[^{]*|upstream\s+\S+|server)\s*\{", text):
        depth, start = 1, match.end()
        i = start
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        blocks.append((match[1].strip(), text[start:i - 1]))
    return blocks


def nginx_size_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def nginx_seconds(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h|d)?", value):
        total += int(number) * {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


# --- metrics -------------------------------------------------------------------------

_METRIC = re.compile(r"\b((?:collab|process|python)_[a-z0-9_]+)\b")
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboards" / "collab.json").read_text())


def dashboard_exprs() -> list[str]:
    exprs = []
    for panel in dashboard()["panels"]:
        exprs.extend(t["expr"] for t in panel.get("targets", []))
    for variable in dashboard()["templating"]["list"]:
        if variable.get("definition"):
            exprs.append(variable["definition"])
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"]]


def referenced_metrics() -> set[str]:
    """Every metric name the dashboard and the alert rules use."""
    names: set[str] = set()
    for expr in dashboard_exprs() + [rule["expr"] for rule in alert_rules()]:
        names.update(_METRIC.findall(expr))
    return names


def family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def exposed_metrics(exposition: str) -> set[str]:
    """Every sample name a Prometheus text exposition can produce (from its TYPE lines and samples)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            base = family(name)
            names.update({name, base})
            if kind == "histogram":
                names.update({base + "_bucket", base + "_sum", base + "_count"})
            elif kind == "counter":
                names.add(base + "_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


# --- Dockerfile ----------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.strip().startswith("#") and not current:
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            logical.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


def healthcheck_command() -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK."""
    for instruction, args in dockerfile_instructions():
        if instruction == "HEALTHCHECK":
            _, _, command = args.partition("CMD ")
            return json.loads(command)
    raise AssertionError("the Dockerfile has no HEALTHCHECK")
