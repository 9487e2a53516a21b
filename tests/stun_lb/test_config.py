"""Relay configuration from layers of option values (file, then command line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stun_lb.core.config import (
    ConfigError,
    ForwardMode,
    LoopKind,
    RebindPolicy,
    RelayConfig,
    build_config,
    load_file,
    parse_backend,
    parse_state,
    redact_url,
)
from wire import route_token

TOML = """
listen = "0.0.0.0:3478"
admin = "127.0.0.1:9000"
backend = ["1=10.0.0.11", "2=10.0.0.12"]
secret = "from-file"
rebind = "verified"
verify-integrity = true
idle-timeout = 12.5
max-flows = 500
loop = "asyncio"
"""


def test_defaults_are_the_published_design_on_loopback() -> None:
    config = RelayConfig()
    assert config.listen == ("127.0.0.1", 3478)
    assert config.admin == ("127.0.0.1", 9478)
    assert config.rebind is RebindPolicy.OFF
    assert config.verify_integrity is False
    assert config.idle_timeout_s == 30.0
    assert config.uses_dev_secret


def test_a_toml_file_sets_every_option(tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    path.write_text(TOML)
    config = build_config([load_file(path)])
    assert config.listen == ("0.0.0.0", 3478)
    assert config.admin == ("127.0.0.1", 9000)
    assert dict(config.backends) == {1: "10.0.0.11", 2: "10.0.0.12"}
    assert config.secret == b"from-file"
    assert config.rebind is RebindPolicy.VERIFIED
    assert config.verify_integrity is True
    assert config.idle_timeout_s == 12.5
    assert config.max_flows == 500
    assert config.loop is LoopKind.ASYNCIO


def test_the_command_line_wins_and_backends_merge_by_id(tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    path.write_text(TOML)
    cli = {
        "backend": ("2=10.0.0.99", "3=media3"),
        "rebind": "ssrc",
        "verify-integrity": False,
        "idle-timeout": "5",
    }
    config = build_config([load_file(path), cli])
    assert dict(config.backends) == {1: "10.0.0.11", 2: "10.0.0.99", 3: "media3"}
    assert config.rebind is RebindPolicy.SSRC
    assert config.verify_integrity is False
    assert config.idle_timeout_s == 5.0
    assert config.max_flows == 500  # from the file, not given on the command line


def test_backends_may_be_a_toml_table_and_hosts_ipv6() -> None:
    config = build_config([{"backend": {"1": "[::1]", "7": "fd00::7"}}])
    assert dict(config.backends) == {1: "::1", 7: "fd00::7"}
    assert build_config([{"listen": "[::1]:3478"}]).listen == ("::1", 3478)


def test_underscored_names_are_accepted() -> None:
    assert build_config([{"max_flows": 3}]).max_flows == 3


def test_secret_text_becomes_the_token_key() -> None:
    config = build_config([{"secret": "s3cret"}])
    assert config.secret == route_token.secret_from_text("s3cret")
    assert not config.uses_dev_secret


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"max-flow": 3}, "unknown option"),
        ({"backend": ["1:10.0.0.1"]}, "not ID=HOST"),
        ({"backend": ["x=10.0.0.1"]}, "not an integer"),
        ({"backend": ["70000=10.0.0.1"]}, "0..65535"),
        ({"backend": ["1="]}, "not ID=HOST"),
        ({"listen": "nowhere"}, "no port"),
        ({"rebind": "sometimes"}, "off|verified|ssrc"),
        ({"verify-integrity": "yes"}, "true or false"),
        ({"idle-timeout": 0}, "at least"),
        ({"max-flows": "many"}, "must be a number"),
        ({"max-flows": True}, "must be a number"),
        ({"loop": "trio"}, "uvloop|asyncio"),
        ({"workers": 0}, "at least"),
        ({"reuse-port": "yes"}, "true or false"),
        ({"state": "disk"}, "memory or redis://"),
        ({"state": "redis://127.0.0.1"}, "no port"),
        ({"state": "redis://:6379"}, "no host"),
        ({"state": "redis://127.0.0.1:6379/zero"}, "must be a number"),
        ({"workers": 2, "listen": "127.0.0.1:3478", "reuse-port": False}, "cannot be off"),
        ({"workers": 2, "listen": "127.0.0.1:0"}, "fixed listen port"),
    ],
)
def test_bad_values_say_what_is_wrong(layer: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config([layer])


def test_parse_backend() -> None:
    assert parse_backend("12=media-12.internal") == (12, "media-12.internal")


def test_unreadable_or_invalid_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("listen = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_file(bad)


def test_scale_out_options_from_a_file_and_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    path.write_text('state = "redis://10.0.0.5:6379/2"\nreuse-port = true\n')
    config = build_config([load_file(path)])
    assert config.state_url == "redis://10.0.0.5:6379/2"
    assert config.reuse_port is True and config.workers == 1
    assert build_config([load_file(path), {"state": "memory"}]).state_url is None


def test_workers_imply_reuse_port() -> None:
    assert RelayConfig().reuse_port is False and RelayConfig().state_url is None
    config = build_config([{"workers": "4"}])
    assert config.workers == 4 and config.reuse_port is True


def test_state_urls() -> None:
    assert parse_state("MEMORY") is None
    assert parse_state("redis://localhost:6379") == "redis://localhost:6379"
    assert parse_state("rediss://u:pw@cache:6380/1") == "rediss://u:pw@cache:6380/1"
    assert parse_state("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_passwords_never_reach_logs_or_healthz() -> None:
    assert redact_url("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("redis://me:p%40ss@cache:6379") == "redis://me:***@cache:6379"
    assert redact_url("redis://cache:6379") == "redis://cache:6379"


def test_the_refresh_interval_is_a_third_of_the_idle_timeout() -> None:
    assert build_config([{"idle-timeout": 30}]).state_refresh_interval_s == 10.0


def test_forwarding_mode_and_the_internal_address() -> None:
    assert RelayConfig().forward is ForwardMode.NAT  # today's behaviour by default
    config = build_config([{"forward": "encap", "internal": "10.0.0.1:3479"}])
    assert config.forward is ForwardMode.ENCAP and config.internal_address == ("10.0.0.1", 3479)
    # Without --internal: the listen host, an ephemeral port.
    assert build_config([{"forward": "encap", "listen": "10.0.0.5:3478"}]).internal_address == (
        "10.0.0.5",
        0,
    )
    # Unused under nat, so one file can serve both modes.
    assert build_config([{"internal": "10.0.0.1:3479"}]).forward is ForwardMode.NAT
    with pytest.raises(ConfigError, match=r"nat\|encap"):
        build_config([{"forward": "tunnel"}])
