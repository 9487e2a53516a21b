"""The compose lab's files and caller environment, checked without a Docker engine.

tests/lab/test_compose_lab.py builds and runs the lab in containers where a
daemon answers; these checks run everywhere.  The compose file validates
against the Compose Specification's JSON schema (vendored,
tests/data/compose/README.md); its cross-references hold (dependencies,
networks, build context, the Dockerfile's sources); every rtclab option a
service passes exists in that command's real click definition; its addresses
agree with one another; the caller's environment renders into the scenario
environment; and that environment's :class:`ServiceStack` drives a real stack
(started here on loopback) through its health checks and a real call.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import jsonschema
import pytest
import yaml

from lab.callers.aiortc_caller import run_call
from lab.cli import main as rtclab
from lab.compose.caller import ComposeLab, ComposeServices, ServiceStack
from lab.scenarios.catalogue import CATALOGUE
from lab.stack import Stack, StackConfig, StackError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "data" / "compose" / "compose-spec.json"
RTCLAB_SERVICES = ("media-1", "media-2", "relay", "signaling", "caller")
# Innermost first: a default may itself be a variable (``${A:-${B:-x}.10}``).
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^{}]*))?\}")


def interpolate(value: Any, environ: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` over a loaded document."""
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3) or ""
        have = environ.get(name)
        if operator == ":-":
            return have if have else default
        if operator == "-":
            return have if have is not None else default
        if operator in (":?", "?"):
            if not have:
                raise AssertionError(f"{name} is required: {default}")
            return have
        return have or ""

    while True:
        expanded = _VARIABLE.sub(one, value)
        if expanded == value:
            return expanded
        value = expanded


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as `docker compose config` would see it with no variables set."""
    rendered: dict[str, Any] = interpolate(raw, {})
    return rendered


def test_valid_against_the_compose_specification(raw: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(raw), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_validator_would_catch_a_broken_file(raw: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(raw))
    broken["services"]["relay"]["ports"] = "3478:3478/udp"  # a string where a list belongs
    broken["services"]["caller"]["cap_ad"] = ["NET_ADMIN"]  # a misspelt key
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    assert len(errors) >= 2


def test_the_services_the_lab_promises(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "prometheus", *RTCLAB_SERVICES}
    # The relay publishes exactly one UDP port (plus its admin port, TCP).
    udp = [p for p in services["relay"]["ports"] if str(p).endswith("/udp")]
    assert udp == ["3478:3478/udp"]
    caller = services["caller"]
    assert caller["cap_add"] == ["NET_ADMIN"]
    # `docker compose run caller rtclab scenario run ...`: no entrypoint in the way.
    assert caller["entrypoint"] == []


def test_cross_references_hold(compose: dict[str, Any]) -> None:
    services, networks = compose["services"], compose["networks"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for network in service.get("networks", {}):
            assert network in networks, (name, network)
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert (context / "Dockerfile").is_file(), name
    assert {"image", "build"} <= set(services["relay"])


def test_the_dockerfile_copies_what_exists_and_installs_the_project() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line.split() for line in dockerfile.splitlines() if line and line[0] != "#"]
    copies = [words[1:-1] for words in instructions if words[0] == "COPY"]
    sources = [src for words in copies if not words[0].startswith("--from") for src in words]
    assert sources and all((ROOT / src).exists() for src in sources), sources
    # Every package pyproject installs is copied in.
    packages = re.search(r"include = \[(.*?)\]", (ROOT / "pyproject.toml").read_text())
    assert packages is not None
    for pattern in re.findall(r'"(\w+)\*"', packages.group(1)):
        assert pattern in sources, pattern
    # One Dockerfile for both routes: the base and the wheel source are build arguments.
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in dockerfile
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert "--no-index --find-links /wheels" in dockerfile and "pip install $source ." in dockerfile
    # The wheelhouse never becomes a layer of the image: only the venv stage copies it.
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "/wheels" not in final and "COPY --from=venv /opt/rtclab /opt/rtclab" in final
    user = [words for words in instructions if words[0] == "USER"]
    assert user and user[-1][1] not in ("root", "0")
    assert 'ENTRYPOINT ["rtclab"]' in dockerfile
    for package in ("iproute2", "nftables", "conntrack"):
        assert package in dockerfile
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not set(sources) & ignored


def _command_of(argv: list[str]) -> tuple[click.Command, list[str]]:
    """The click command an ``rtclab ...`` argv reaches, and the arguments left."""
    command: click.Command = rtclab
    words = list(argv)
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        command = command.commands[words.pop(0)]
    return command, words


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def _argv(service: dict[str, Any]) -> list[str]:
    command = list(service["command"])
    return command[1:] if command and command[0] == "rtclab" else command


@pytest.mark.parametrize("name", RTCLAB_SERVICES)
def test_commands_use_real_rtclab_options(compose: dict[str, Any], name: str) -> None:
    argv = _argv(compose["services"][name])
    command, rest = _command_of(argv)
    assert command is not rtclab, f"{name}: {argv[0]!r} is no rtclab command"
    known = _options(command)
    for word in rest:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in known, f"{name}: {word} not in {sorted(known)}"
    # And click accepts the whole line (types, choices, ranges), as the container would.
    command.make_context(command.name, rest, resilient_parsing=False)


def test_documented_caller_command_parses() -> None:
    command, rest = _command_of(["scenario", "run", "ip-change", "--quick"])
    command.make_context(command.name, rest)
    assert "ip-change" in CATALOGUE


def _flag(argv: list[str], name: str) -> str:
    (value,) = [w.split("=", 1)[1] for w in argv if w.startswith(f"--{name}=")]
    return value


def test_addresses_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = compose["networks"]["lab"]["ipam"]["config"][0]
    subnet = ipaddress.ip_network(config["subnet"])
    dynamic = ipaddress.ip_network(config["ip_range"])
    static = {
        name: ipaddress.ip_address(s["networks"]["lab"]["ipv4_address"])
        for name, s in services.items()
        if (s.get("networks", {}).get("lab") or {}).get("ipv4_address")
    }
    assert all(ip in subnet and ip not in dynamic for ip in static.values())
    relay = _argv(services["relay"])
    relay_port = _flag(relay, "listen").rsplit(":", 1)[1]
    backends = dict(
        b.split("=", 1) for b in (w.split("=", 1)[1] for w in relay if "--backend=" in w)
    )
    for index in (1, 2):
        media = _argv(services[f"media-{index}"])
        # The relay reaches each media server where its sessions bind, by the id its tokens carry.
        assert backends[_flag(media, "backend-id")] == _flag(media, "bind-host")
        assert ipaddress.ip_address(_flag(media, "bind-host")) == static[f"media-{index}"]
        assert _flag(media, "relay") == f"{static['relay']}:{relay_port}"
        # encap: the media servers trust exactly the relay's internal socket, on the
        # relay's own address; both sides follow the one RTCLAB_FORWARD setting.
        assert _flag(media, "trusted-relay") == _flag(relay, "internal")
        assert _flag(media, "forward") == _flag(relay, "forward")
    env = services["caller"]["environment"]
    assert env["RTCLAB_RELAY"] == f"{static['relay']}:{relay_port}"
    signaling = _argv(services["signaling"])
    media_urls = [w.split("=", 1)[1] for w in signaling if w.startswith("--media=")]
    assert env["RTCLAB_MEDIA"].split(",") == media_urls
    for url in media_urls:
        host, port = urlsplit(url).hostname, urlsplit(url).port
        assert host is not None and _flag(_argv(services[host]), "listen").endswith(f":{port}")
    assert urlsplit(env["RTCLAB_SIGNALING_URL"]).port == int(
        _flag(signaling, "listen").rsplit(":", 1)[1]
    )
    assert urlsplit(env["RTCLAB_RELAY_ADMIN_URL"]).port == int(
        _flag(relay, "admin").rsplit(":", 1)[1]
    )
    assert env["RTCLAB_REBIND"] == _flag(relay, "rebind")
    assert env["RTCLAB_FORWARD"] == _flag(relay, "forward")
    assert env["RTCLAB_MEDIA_SOCKET"] == _flag(_argv(services["media-1"]), "media-socket")
    assert _flag(relay, "internal").rsplit(":", 1)[0] == str(static["relay"])
    first, last = (ipaddress.ip_address(a) for a in env["RTCLAB_CALLER_MOVE_TO"].split("-"))
    for ip in (first, last):
        assert ip in subnet and ip not in dynamic and ip not in static.values()
    assert subnet.prefixlen == int(env["RTCLAB_CALLER_PREFIX_LEN"])


def test_the_caller_environment_renders_the_scenario_environment(compose: dict[str, Any]) -> None:
    env = {k: str(v) for k, v in compose["services"]["caller"]["environment"].items()}
    services = ComposeServices.from_environment(env)
    assert services.relay == ("172.31.77.10", 3478)
    assert len(services.moved_addresses) == 51
    lab = ComposeLab(services, caller_host="172.31.77.70")
    config = lab.stack_config(True, {"media_servers": 1, "rebind": "off"})
    assert (config.host, config.relay_port, config.signaling_port) == ("172.31.77.10", 3478, 8080)
    assert config.media_ports == (8101, 8102) and config.rebind == "off"
    # ip-change has one run per relay policy: the deployed one runs, the others say why not.
    reasons = {run.label: lab.skip_reason(run) for run in CATALOGUE["ip-change"].runs(True)}
    assert reasons["rebind=off"] is None
    assert "RTCLAB_REBIND=verified" in str(reasons["rebind=verified"])
    with pytest.raises(StackError, match="--rebind ssrc"):
        lab.stack_config(True, {"rebind": "ssrc"})


@pytest.mark.e2e
async def test_service_stack_drives_running_services(tmp_path: Path) -> None:
    # The "containers": a stack on loopback at fixed ports, as compose would run it.
    async with Stack(StackConfig(log_dir=tmp_path / "services")) as running:
        services = ComposeServices(
            signaling_url=running.signaling_url,
            relay=running.relay_address,
            relay_admin_url=running.relay_admin_url,
            media_urls=tuple(running.media_url(i) for i in range(len(running.media_ports))),
            rebind="off",
            state="memory",
            interface="lo",
            prefix_len=8,
            moved_addresses=(),
        )
        lab = ComposeLab(services)
        assert lab.caller_host == "127.0.0.1"
        config = lab.stack_config(True, {"media_servers": 1}, log_dir=tmp_path / "run")
        stack = lab.make_stack(config)
        async with stack:
            assert stack.children == {}  # nothing of ours to start or stop
            assert stack.caller_signaling_url == running.signaling_url
            assert stack.public_address == running.relay_address
            assert stack.relay_admin_urls() == {"relay": running.relay_admin_url}
            result = await run_call(f"{stack.caller_signaling_url}/v1/calls", seconds=2.0)
            assert result["ok"], result["error"]
            flows = await stack.get_json(f"{stack.relay_admin_url}/flows")
            assert flows, "the call crossed the relay"
            with pytest.raises(StackError, match="docker compose kill"):
                await stack.kill("media-1")
        # Leaving the ServiceStack stopped nothing: the services still answer.
        assert await running.get_json(f"{running.relay_admin_url}/healthz")
        assert all(child.running for child in running.children.values())
    assert isinstance(stack, ServiceStack)


def test_caller_nat_ruleset_loads(tmp_path: Path) -> None:
    from lab.netns.host import probe, remove_namespace, run
    from lab.netns.plan import PREFIX, own_nat_ruleset

    capabilities = probe()
    if capabilities.unusable() or not shutil.which("nft"):
        pytest.skip(f"cannot try nftables here: {capabilities.unusable()}")
    scratch = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-probe"
    run(["ip", "netns", "add", scratch])
    try:
        ruleset = own_nat_ruleset("172.31.77.10", "172.31.77.70", "eth0", emulator_uid=10001)
        run(["ip", "netns", "exec", scratch, "nft", "-f", "-"], stdin=ruleset)
        listed = run(["ip", "netns", "exec", scratch, "nft", "list", "ruleset"])
        assert "masquerade fully-random" in listed and "map moved" in listed
        assert "meta skuid != 10001" in listed and "map @emu_udp" in listed
    finally:
        remove_namespace(scratch)
