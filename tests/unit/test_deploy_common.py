"""The one Docker image, plus helpers shared by the other ``test_deploy_*`` modules.

Nothing here needs a Docker engine: the deployment files are checked against the code they run.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from handshake.security import acl_rules
from handshake.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
SERVICES_DIR = ROOT / "services"

#: Third-party images the deployment may use (repository part of the reference).
KNOWN_IMAGES = {"apache/kafka", "prom/prometheus", "grafana/grafana"}
#: The port each service listens on, per the README / DESIGN.md contract.
CONTRACT_PORTS = {"api": 8000, "ingest": 8001, "aggregator": 8002}
#: Settings fields naming a service's listen address and port.
HOST_FIELDS = ("host", "web_host")
PORT_FIELDS = ("port", "web_port")


@cache
def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def project_image() -> str:
    return f"handshake:{project_version()}"


@cache
def service_names() -> tuple[str, ...]:
    """The services ``handshake serve`` accepts (the CLI's enum)."""
    from handshake.cli import Service

    return tuple(s.value for s in Service)


@cache
def settings_class(service: str | None) -> type[BaseSettings]:
    """The settings class of ``services/<service>/settings.py`` (KafkaSettings when none)."""
    if service is None or not (SERVICES_DIR / service / "settings.py").exists():
        return KafkaSettings
    module = importlib.import_module(f"services.{service}.settings")
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj.__module__ == module.__name__
    ]
    assert len(found) == 1, f"services/{service}/settings.py should define one settings class, found {found}"
    return found[0]


def field_env_names(cls: type[BaseSettings], name: str) -> set[str]:
    """The environment variables pydantic-settings reads for one field (upper case)."""
    field = cls.model_fields[name]
    alias = field.validation_alias if field.validation_alias is not None else field.alias
    choices: list[Any]
    if alias is None:
        return {f"{cls.model_config.get('env_prefix', '')}{name}".upper()}
    choices = list(alias.choices) if isinstance(alias, AliasChoices) else [alias]
    names = set()
    for choice in choices:
        if isinstance(choice, AliasPath):
            choice = choice.path[0]
        if isinstance(choice, str):
            names.add(choice.upper())
    return names


@cache
def env_fields(service: str | None) -> dict[str, str]:
    """Every HANDSHAKE_* variable a service reads, mapped to its settings field."""
    cls = settings_class(service)
    out: dict[str, str] = {}
    for name in cls.model_fields:
        for env in field_env_names(cls, name):
            if env.startswith("HANDSHAKE_"):
                out[env] = name
    return out


def field_default(service: str, name: str) -> Any:
    return settings_class(service).model_fields[name].default


def effective(service: str, env: dict[str, str], candidates: tuple[str, ...]) -> tuple[str, Any]:
    """(field, value) of the first of ``candidates`` the service has: env override, else default."""
    cls = settings_class(service)
    for name in candidates:
        if name in cls.model_fields:
            for var in field_env_names(cls, name):
                if var in env:
                    return name, env[var]
            return name, field_default(service, name)
    raise AssertionError(f"{service} settings have none of the fields {candidates}")


def unknown_env(service: str | None, env: dict[str, str]) -> list[str]:
    known = env_fields(service)
    return sorted(k for k in env if k.upper().startswith("HANDSHAKE_") and k.upper() not in known)


def image_repository(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image


def kafka_command(args: list[str]) -> dict[str, Any]:
    """The parameters of ``handshake kafka <command> ...``, parsed by the real CLI (fails on a typo)."""
    import typer.main

    from handshake.cli import kafka_app

    commands = getattr(typer.main.get_command(kafka_app), "commands", {})
    assert args[1] in commands, f"'handshake kafka {args[1]}' is no command"
    return dict(commands[args[1]].make_context(args[1], list(args[2:])).params)


def run_kafka_secrets(params: dict[str, Any], directory: Path, mount: Path | None) -> None:
    """``handshake kafka secrets`` as a deployment runs it (``params`` from :func:`kafka_command`),
    writing into ``directory`` seen at ``mount``; owners left out (no chown in tests)."""
    from handshake.cli import kafka_secrets

    kafka_secrets(
        **params | {"directory": directory, "mount": mount, "broker_owner": None, "client_owner": None}
    )


def check_handshake_args(args: list[str]) -> str | None:
    """The service a container runs, after asserting its arguments name a real CLI command."""
    assert args, "the container must say which command of the image to run"
    if args[0] == "kafka" and args[1] in ("topics", "secrets"):
        kafka_command(args)
        return None
    assert len(args) == 2 and args[0] == "serve", f"expected ['serve', <service>], got {args}"
    assert args[1] in service_names(), f"'handshake serve {args[1]}' is no service of {service_names()}"
    return args[1]


# --- metric names ---------------------------------------------------------------------------

_PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    # aggregation operators, which may be followed by ``by (...)`` instead of ``(``
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
}
#: Series Prometheus makes itself for every target.
BUILTIN_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (selectors, not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries, $__rate_interval
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1 ", text, flags=re.IGNORECASE
    )
    text = re.sub(r"\$\w+|\$\{[^}]*\}", " ", text)  # dashboard variables
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


@cache
def declared_metrics() -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
    """String literals and metric-name-like f-string templates in services/ and handshake/.

    Metric names are created with literals (``Counter("ingest_records_total", ...)``) or templates
    (``f"{prefix}_http_requests_total"`` with ``RequestMetrics(registry, "ingest")``), so a
    metric exists when its name is a literal, or matches a template whose variable parts are
    literals too.
    """
    literals: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for path in [*sorted((ROOT / "services").rglob("*.py")), *sorted((ROOT / "handshake").rglob("*.py"))]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
            elif isinstance(node, ast.JoinedStr):
                parts = [v.value if isinstance(v, ast.Constant) else None for v in node.values]
                fixed = "".join(p for p in parts if isinstance(p, str))
                if fixed and re.fullmatch(r"[\w:]+", fixed):  # only names can be metric names
                    regex = "".join(re.escape(p) if isinstance(p, str) else r"([A-Za-z_]\w*)" for p in parts)
                    patterns.append(re.compile(regex))
    return frozenset(literals), tuple(patterns)


def _matches_template(name: str) -> bool:
    literals, patterns = declared_metrics()
    for pattern in patterns:
        match = pattern.fullmatch(name)
        if match and all(group in literals for group in match.groups()):
            return True
    return False


def metric_exists(name: str) -> bool:
    if name in BUILTIN_METRICS:
        return True
    literals, _ = declared_metrics()
    candidates = {name}
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            candidates.add(name[: -len(suffix)])
    for candidate in list(candidates):
        candidates.add(candidate + "_total")  # counters may be declared with or without _total
    return any(c in literals or _matches_template(c) for c in candidates)


# --- the Dockerfile -------------------------------------------------------------------------


@cache
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in final_stage():
        if word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def dockerfile_user() -> str:
    """The numeric user the image runs as."""
    return dict(final_stage()).get("USER", "root").split(":")[0]


def test_dockerfile_builds_one_image_from_pyproject() -> None:
    instructions = dockerfile_instructions()
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1]
        for word, rest in instructions
        if word == "ARG" and "=" in rest
    }
    bases = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    resolved = [args.get(b.strip("${}"), b) for b in bases]
    assert resolved and all(b == "python:3.11-slim" for b in resolved), resolved
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    copies = " ".join(rest for word, rest in instructions if word == "COPY")
    assert "pyproject.toml" in copies and "pip install" in runs
    for package in ("handshake", "schemas", "services"):
        assert re.search(rf"\b{package}\b", copies), f"the image must contain the {package} package"


def test_dockerfile_runtime_contract() -> None:
    stage = final_stage()
    words = dict(stage)
    user = words.get("USER", "root").split(":")[0]
    assert user not in ("", "root", "0"), "the image must run as a non-root user"
    assert "HEALTHCHECK" not in words, "probes belong to compose/Kubernetes, not the image"
    assert words["ENTRYPOINT"] == '["handshake"]'
    assert words["CMD"].replace(" ", "") == '["serve","api"]'
    exposed = {int(p.split("/")[0]) for word, rest in stage if word == "EXPOSE" for p in rest.split()}
    assert exposed == set(CONTRACT_PORTS.values())


def test_dockerfile_env_is_real_settings() -> None:
    env = dockerfile_env()
    every = set().union(*(env_fields(s) for s in service_names()), env_fields(None))
    unknown = sorted(k for k in env if k.startswith("HANDSHAKE_") and k not in every)
    assert not unknown, f"Dockerfile sets variables no settings class reads: {unknown}"


def test_settings_defaults_match_the_port_contract() -> None:
    for service, port in CONTRACT_PORTS.items():
        _, default = effective(service, {}, PORT_FIELDS)
        assert default == port, f"{service} listens on {default} by default, the README says {port}"


def test_dockerignore_keeps_local_state_out() -> None:
    lines = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".venv", ".handshake", ".git", "tests", "**/__pycache__", ".mypy_cache", ".pytest_cache"):
        assert entry in lines, f".dockerignore should exclude {entry}"
    assert "deploy" in lines or "deploy/kafka/lib" in lines
    for needed in ("pyproject.toml", "README.md", "handshake", "schemas", "services"):
        assert needed not in lines, f"{needed} is needed by the image build"


def test_promql_metric_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(ingest_produce_seconds_bucket{job="x"}[5m]))) > 1 '
        "and on () sum(rate(foo_total[$__rate_interval])) > 0 or up == 0"
    )
    assert promql_metrics(expr) == {"ingest_produce_seconds_bucket", "foo_total", "up"}


def test_every_dashboard_file_ships_in_the_package() -> None:
    """A non-editable install (the Docker image) carries only files matching package-data: every
    static file of the dashboard, vendored licences included, must match a pattern."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    static = root / "services" / "api" / "static"
    files = [p for p in static.rglob("*") if p.is_file()]
    assert len(files) > 15
    missing = [
        str(p.relative_to(static)) for p in files if not any(fnmatch.fnmatch(p.name, g) for g in patterns)
    ]
    assert not missing, f"add a package-data pattern for {missing}"


def test_least_privilege_acls() -> None:
    """Who may write and read what on a secured broker (handshake.security.acl_rules)."""
    from handshake.security import analyst_rules

    settings = KafkaSettings()
    rules = acl_rules(settings)
    writers: dict[str, set[str]] = {r.name: set() for r in rules}
    for r in rules:
        if r.operation in ("WRITE", "ALL") and r.resource == "TOPIC":
            writers[r.name].add(r.principal)
    assert writers[settings.events_topic] == {"handshake-ingest"}
    assert writers[settings.partners_topic] == {"handshake-partners"}
    assert writers[settings.pair_stats_topic] == {"handshake-aggregator"}
    assert writers[settings.dead_letter_topic] == {"handshake-aggregator"}
    readers_of_partners = {
        r.principal for r in rules if r.name == settings.partners_topic and r.operation == "READ"
    }
    assert readers_of_partners == {"handshake-ingest", "handshake-partners"}
    assert not [r for r in rules if r.principal == "admin"]  # the super user needs none
    ana = analyst_rules(settings, "ana")
    assert {r.operation for r in ana} == {"READ", "DESCRIBE"}
    assert {r.name for r in ana if r.resource == "TOPIC"} == {
        settings.events_topic,
        settings.pair_stats_topic,
        settings.dead_letter_topic,
    }
    (group,) = [r for r in ana if r.resource == "GROUP"]
    assert group.prefixed and group.name == "analyst-ana."


def test_a_child_process_gets_the_kafka_password_but_logs_and_dumps_never_show_it() -> None:
    from services.api.settings import ApiSettings

    settings = ApiSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_username="handshake-api",
        kafka_password="s3cret-value-xyz",
        kafka_ca_file=Path("/tmp/ca.pem"),
    )
    assert "s3cret-value-xyz" not in repr(settings) and "s3cret-value-xyz" not in settings.model_dump_json()
    child = ApiSettings.model_validate_json(settings.for_child_process())
    assert child.kafka_password is not None and child.kafka_password.get_secret_value() == "s3cret-value-xyz"
    config = child.kafka_python_config()
    assert config["sasl_plain_password"] == "s3cret-value-xyz" and config["security_protocol"] == "SASL_SSL"
    assert ApiSettings().kafka_python_config() == {} and ApiSettings().aiokafka_config() == {}
