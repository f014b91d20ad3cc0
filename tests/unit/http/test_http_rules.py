"""The dashboard's pure rules: where it listens, who may see it, who may steer, the chart."""

from __future__ import annotations

import re

import pytest

from casparian_trio.config import SentinelConfig
from casparian_trio.errors import ConfigError
from casparian_trio.http import HttpAddress, check_http_settings, parse_http_address
from casparian_trio.http._auth import Auth, bearer_of, csrf_value, judge, may_steer
from casparian_trio.http._chart import throughput_svg

TOKEN = "s3cret-token-0123456789"


@pytest.mark.parametrize(
    ("text", "host", "port", "bind"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
        (":9000", "127.0.0.1", 9000, "127.0.0.1:9000"),
        ("localhost:0", "localhost", 0, "localhost:0"),
        ("[::1]:8080", "::1", 8080, "[::1]:8080"),
        ("http://127.0.0.2:81/", "127.0.0.2", 81, "127.0.0.2:81"),
        ("0.0.0.0:8080", "0.0.0.0", 8080, "0.0.0.0:8080"),
    ],
)
def test_parse_http_address(text: str, host: str, port: int, bind: str) -> None:
    address = parse_http_address(text)
    assert (address.host, address.port, address.bind) == (host, port, bind)


@pytest.mark.parametrize("text", ["8080x", "127.0.0.1", "host:", "[::1:80", "1.2.3.4:70000"])
def test_bad_addresses_are_one_line_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--http"):
        parse_http_address(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("192.168.1.4", False), ("example.org", False)],
)  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert HttpAddress(host, 80).is_loopback is loopback


def test_another_address_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="not a loopback address: pass --http-token"):
        check_http_settings("0.0.0.0:8080", None)
    assert check_http_settings("0.0.0.0:8080", TOKEN) == HttpAddress("0.0.0.0", 8080)
    assert check_http_settings("127.0.0.1:8080", None) == HttpAddress("127.0.0.1", 8080)
    assert check_http_settings(None, None) is None


def test_token_rules() -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        check_http_settings("127.0.0.1:1", "short")
    with pytest.raises(ConfigError, match="nothing to guard"):
        check_http_settings(None, TOKEN)


def test_sentinel_config_checks_http_from_flags_env_and_file(tmp_path: object) -> None:
    assert SentinelConfig.load({}, environ={}).http is None  # off by default
    config = SentinelConfig.load({"http": ":8080"}, environ={})
    assert config.http == ":8080"
    with pytest.raises(ConfigError, match="loopback"):
        SentinelConfig.load({}, environ={"CASPARIAN_HTTP": "0.0.0.0:80"})
    env = {"CASPARIAN_HTTP": "0.0.0.0:80", "CASPARIAN_HTTP_TOKEN": TOKEN}
    assert SentinelConfig.load({}, environ=env).http_token == TOKEN


def test_config_file_keys(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "casparian.toml"
    path.write_text(f'[sentinel]\nhttp = "0.0.0.0:8081"\nhttp_token = "{TOKEN}"\n')
    config = SentinelConfig.load({}, config_path=path, environ={})
    assert (config.http, config.http_token) == ("0.0.0.0:8081", TOKEN)


# --- the token ------------------------------------------------------------------------


def test_judge_without_a_token_is_open() -> None:
    assert judge(None, bearer=None, cookie=None, query=None) is Auth.OPEN
    assert judge(None, bearer="anything", cookie=None, query=None) is Auth.OPEN


@pytest.mark.parametrize(
    ("bearer", "cookie", "query", "expected"),
    [
        (TOKEN, None, None, Auth.BEARER),
        (None, TOKEN, None, Auth.COOKIE),
        (None, None, TOKEN, Auth.COOKIE),
        (None, None, None, None),
        ("wrong", "wrong", "wrong", None),
        (TOKEN + "x", None, None, None),
        ("", None, None, None),
    ],
)
def test_judge_with_a_token(
    bearer: str | None, cookie: str | None, query: str | None, expected: Auth | None
) -> None:
    assert judge(TOKEN, bearer=bearer, cookie=cookie, query=query) is expected


def test_bearer_header() -> None:
    assert bearer_of(f"Bearer {TOKEN}") == TOKEN
    assert bearer_of(f"bearer  {TOKEN} ") == TOKEN
    assert bearer_of(f"Basic {TOKEN}") is None
    assert bearer_of(None) is None


def test_who_may_steer() -> None:
    refused = may_steer(None, Auth.OPEN, None)
    assert refused is not None
    assert refused[0] == 403
    assert "read-only" in refused[1]
    assert may_steer(TOKEN, Auth.BEARER, None) is None
    assert may_steer(TOKEN, Auth.COOKIE, csrf_value(TOKEN)) is None
    assert may_steer(TOKEN, Auth.COOKIE, None) is not None  # a cookie alone: cross-site forgery
    assert may_steer(TOKEN, Auth.COOKIE, csrf_value("another-token-00000")) is not None
    assert csrf_value(TOKEN) != TOKEN


# --- the chart ------------------------------------------------------------------------------


def test_chart_scales_bars_to_the_busiest_bucket() -> None:
    svg = throughput_svg(
        [{}, {"COMPLETED": 4}, {"COMPLETED": 2, "FAILED": 2}, {"TIMED_OUT": 1}], bucket_s=60
    )
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    heights = [float(h) for h in re.findall(r'class="(?:done|failed)"[^>]*height="([\d.]+)"', svg)]
    plot = 140 - 18
    assert heights == [plot, plot / 2, plot / 2, plot / 4]
    assert ">4</text>" in svg  # the y axis names the peak
    assert "4 completed, 0 failed" in svg
    assert "2 completed, 2 failed" in svg


def test_chart_of_nothing_draws_no_bars() -> None:
    svg = throughput_svg([{} for _ in range(30)], bucket_s=60)
    assert "<rect" not in svg
    assert "30 min ago" in svg
