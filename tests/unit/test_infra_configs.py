"""The deployment's configuration files are valid, and agree with each other and with the code.

Checked with the real tools where Debian has them (scripts/setup.sh --test installs them):
promtool (Prometheus config, alert rules, the rules' own tests, and every Grafana query as
PromQL), caddy (the Caddyfile, and where each SPEC path is routed), docker-compose (the compose
file). The tools are required: a missing one fails the test, it does not skip it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import services.dashboard.app
import services.dispatch.notifier.worker
import services.dispatch.service
import services.ingest.app
import siaga.bus
from siaga.cli import parser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROMETHEUS = INFRA / "prometheus"
CADDYFILE = INFRA / "caddy" / "Caddyfile"
COMPOSE = INFRA / "docker-compose.yml"
GRAFANA = INFRA / "grafana"
DASHBOARD_JSON = GRAFANA / "dashboards" / "siaga.json"

# SPEC section 3, "Who serves what", with the port each process listens on in the compose file.
# The Telegram webhook goes to the notifier: it runs apart from dispatch in this deployment.
ROUTES = {
    "/v1/events": ("ingest", 8001),
    "/v1/events/batch": ("ingest", 8001),
    "/v1/gateway/events": ("ingest", 8001),
    "/v1/device/inbox": ("ingest", 8001),
    "/v1/incidents": ("dispatch", 8002),
    "/v1/incidents/INC-1/ack": ("dispatch", 8002),
    "/v1/messages": ("dispatch", 8002),
    "/v1/reports/daily": ("dispatch", 8002),
    "/v1/admin/tps/import": ("dispatch", 8002),
    "/v1/telegram/webhook": ("notifier", 8004),
    "/": ("dashboard", 8003),
    "/static/app.js": ("dashboard", 8003),
    "/me": ("dashboard", 8003),
    "/ws": ("dashboard", 8003),
}
NOT_PUBLIC = ["/metrics", "/healthz", "/readyz", "/docs", "/openapi.json", "/v1/eventsx", "/v1/incidentsx"]
SERVICES = {"ingest": 8001, "dispatch": 8002, "dashboard": 8003, "notifier": 8004}
COMPOSE_ENV = {"POSTGRES_PASSWORD": "pw", "SIAGA_ADMIN_TOKEN": "adm_x", "GRAFANA_ADMIN_PASSWORD": "gf"}


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"`{name}` is missing: install Debian's {package} package (scripts/setup.sh --test does)"
    return path


def run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{shlex.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


# -- Prometheus


def test_promtool_accepts_the_prometheus_config() -> None:
    out = run([tool("promtool", "prometheus"), "check", "config", "prometheus.yml"], cwd=PROMETHEUS)
    assert "SUCCESS" in out and "1 rule files found" in out


def test_promtool_accepts_the_alert_rules() -> None:
    out = run([tool("promtool", "prometheus"), "check", "rules", "alerts.yml"], cwd=PROMETHEUS)
    assert "SUCCESS" in out


def test_each_alert_fires_when_it_should_and_only_then() -> None:
    out = run([tool("promtool", "prometheus"), "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS)
    assert "SUCCESS" in out
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert alerts == tested, f"alerts without a promtool test: {sorted(alerts - tested)}"


def test_the_alerts_cover_what_election_day_needs_watched() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    needed = {
        "consumer lag": "siaga_consumer_lag",
        "dead-letter rate": "siaga_dead_letter_total",
        "alert delivery failures": 'siaga_alert_deliveries_total{outcome="failed"}',
        "ingest 503s": 'siaga_ingest_requests_total{status="503"}',
        "silent posts": "siaga_dispatch_silent_posts",
    }
    for what, needle in needed.items():
        assert any(needle in e for e in exprs.values()), f"no alert watches {what}"
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for name in exprs:
        assert f"#### {name}" in runbook, f"docs/operations.md has no runbook entry for {name}"


def exposed_metric_names() -> set[str]:
    """The sample names the services' /metrics can show (the registry holds every module's metrics)."""
    assert siaga.bus and services.ingest.app and services.dispatch.service  # imported for their metrics
    assert services.dispatch.notifier.worker and services.dashboard.app
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum", "_created"]}
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def referenced_metrics(text: str) -> set[str]:
    return set(re.findall(r"\b(siaga_[a-z_]+)", text))


def test_the_rules_and_the_dashboard_name_metrics_the_code_exposes() -> None:
    exposed = exposed_metric_names()
    for path in (PROMETHEUS / "alerts.yml", DASHBOARD_JSON):
        referenced = referenced_metrics(path.read_text())
        assert referenced, path
        assert referenced <= exposed, f"{path.name} names metrics no service exposes: {sorted(referenced - exposed)}"


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    for name, port in SERVICES.items():
        [sd] = jobs[name]["dns_sd_configs"]
        assert (sd["names"], sd["type"], sd["port"]) == ([name], "A", port)
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"


# -- Grafana


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD_JSON.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    rules = {
        "groups": [{"name": "panels", "rules": [{"record": f"panel:{i}", "expr": e} for i, e in enumerate(exprs)]}]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    run([tool("promtool", "prometheus"), "check", "rules", str(tmp_path / "panels.yml")])


def test_the_dashboard_is_provisioned_with_its_data_source() -> None:
    [source] = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    doc = json.loads(DASHBOARD_JSON.read_text())
    uids = {p["datasource"]["uid"] for p in doc["panels"] if "datasource" in p}
    uids |= {t["datasource"]["uid"] for p in doc["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    [provider] = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "siaga.yml").read_text())["providers"]
    grafana = compose()["services"]["grafana"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]


# -- Caddy


def caddy_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SIAGA_SITE_ADDRESS": "localhost",
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }


def test_caddy_validates_the_caddyfile(tmp_path: Path) -> None:
    caddy = tool("caddy", "caddy")
    out = run([caddy, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"], env=caddy_env(tmp_path))
    assert "Valid configuration" in out
    formatted = run([caddy, "fmt", str(CADDYFILE)], env=caddy_env(tmp_path))
    assert formatted.strip() == CADDYFILE.read_text().strip(), "the Caddyfile is as `caddy fmt` writes it"


def _path_matches(pattern: str, path: str) -> bool:
    return path.startswith(pattern[:-1]) if pattern.endswith("*") else path == pattern


def _route(routes: list[dict[str, Any]], path: str) -> dict[str, Any] | None:
    """The first route whose path matcher takes `path` (a route without a matcher takes all)."""
    for route in routes:
        matchers = route.get("match", [])
        if not matchers or any(_path_matches(p, path) for m in matchers for p in m.get("path", [])):
            return route
    return None


def _handlers(route: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for h in route["handle"]:
        if h["handler"] == "subroute":
            out += [x for r in h["routes"] for x in _handlers(r)]
        else:
            out.append(h)
    return out


def test_caddy_routes_each_spec_path_to_its_service(tmp_path: Path) -> None:
    adapted = run(
        [tool("caddy", "caddy"), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"], env=caddy_env(tmp_path)
    )
    config = json.loads(adapted[adapted.index("{") :])
    [server] = config["apps"]["http"]["servers"].values()
    [site] = server["routes"]
    assert site["match"] == [{"host": ["localhost"]}]
    routes = site["handle"][0]["routes"]
    for path, (service, port) in {**ROUTES, **dict.fromkeys(NOT_PUBLIC, (None, None))}.items():
        route = _route(routes, path)
        assert route is not None, path
        proxies = [h for h in _handlers(route) if h["handler"] == "reverse_proxy"]
        if service is None:
            assert not proxies and any(h.get("status_code") == 404 for h in _handlers(route)), f"{path} is public"
            continue
        [proxy] = proxies
        upstream = proxy["dynamic_upstreams"]
        assert (upstream["source"], upstream["name"], int(upstream["port"])) == ("a", service, port), path


# -- docker compose


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the << merge keys
    return doc


def test_docker_compose_accepts_the_file() -> None:
    # Debian ships Compose v1, which predates the top-level `name` (Compose v2 reads it): the copy
    # checked here leaves it out and gives the same project name on the command line.
    assert compose()["name"] == "siaga"
    compose_v1 = tool("docker-compose", "docker-compose")
    copy = INFRA / f".compose-check-{os.getpid()}.yml"  # beside the original: relative paths resolve alike
    copy.write_text("".join(line for line in COMPOSE.read_text().splitlines(True) if line != "name: siaga\n"))
    try:
        out = run([compose_v1, "-p", "siaga", "-f", str(copy), "config", "--quiet"], env={**os.environ, **COMPOSE_ENV})
        assert "ERROR" not in out and "WARNING" not in out, out
        for secret in COMPOSE_ENV:
            without = {k: v for k, v in {**os.environ, **COMPOSE_ENV}.items() if k != secret}
            refused = subprocess.run(
                [compose_v1, "-p", "siaga", "-f", str(copy), "config", "--quiet"],
                env=without,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert refused.returncode != 0 and f"set {secret}" in refused.stderr, f"{secret} is required"
    finally:
        copy.unlink()


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service["environment"].items()}


def test_three_kraft_brokers_replicate_every_message_to_two_at_least() -> None:
    services = compose()["services"]
    brokers = {name: env_of(s) for name, s in services.items() if name.startswith("kafka")}
    assert sorted(brokers) == ["kafka1", "kafka2", "kafka3"]
    voters = {f"{e['KAFKA_NODE_ID']}@{name}:9093" for name, e in brokers.items()}
    for name, e in brokers.items():
        assert set(e["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert e["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert e["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert e["KAFKA_DEFAULT_REPLICATION_FACTOR"] == e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert e["KAFKA_MIN_INSYNC_REPLICAS"] == e["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert e["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert services[name]["volumes"] == [f"{name}-data:/var/lib/kafka/data"]
    assert len({e["CLUSTER_ID"] for e in brokers.values()}) == 1, "one cluster"
    assert len({e["KAFKA_NODE_ID"] for e in brokers.values()}) == 3
    siaga_env = env_of(services["ingest"])
    assert set(siaga_env["SIAGA_KAFKA_BOOTSTRAP"].split(",")) == {f"{b}:9092" for b in brokers}
    assert siaga_env["SIAGA_KAFKA_REPLICATION_FACTOR"] == "3", "the topics Siaga creates are replicated too"


def test_each_siaga_process_runs_as_the_cli_says_and_is_health_checked() -> None:
    services = compose()["services"]
    for name, port in SERVICES.items():
        service = services[name]
        command = service["command"]
        assert command[:2] == ["siaga", name]
        args = parser().parse_args(command[1:])  # the compose command is one the CLI takes
        assert (args.host, args.port) == ("0.0.0.0", port)
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and f"http://127.0.0.1:{port}/readyz" in test[-1]
        assert "ports" not in service, f"{name} is reached through the proxy only"
        deps = service["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}
        assert all(deps[b] == {"condition": "service_healthy"} for b in ("kafka1", "kafka2", "kafka3", "postgres"))
        assert env_of(service)["SIAGA_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert parser().parse_args(services["dispatch"]["command"][1:]).no_notifier, "the notifier runs on its own"
    assert services["migrate"]["command"] == ["siaga", "migrate"] and services["migrate"]["restart"] == "no"


def test_only_the_proxy_is_public_and_every_mounted_file_exists() -> None:
    services = compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert published.pop("proxy") == ["80:80", "443:443", "443:443/udp"]
    assert all(p.startswith("127.0.0.1:") for ports in published.values() for p in ports), published
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and source != "./backups":
                assert (INFRA / source).exists(), f"{name} mounts {source}, which is not in infra/"
    assert "./caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in services["proxy"]["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]


def test_the_image_runs_as_an_unprivileged_user() -> None:
    lines = (INFRA / "Dockerfile").read_text().splitlines()
    assert any(line.startswith("USER ") and line.split()[1] != "root" for line in lines)
