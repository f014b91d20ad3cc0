"""Where the dashboard listens, and the rule that guards it: pure, no I/O.

``--http`` takes ``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (127.0.0.1). A
loopback address (127.0.0.0/8, ::1, ``localhost``) is served as is; any other
address only with a token, because the pages show file paths and tracebacks and
the buttons steer the queue.
"""

from __future__ import annotations

import ipaddress

import attrs

from casparian_trio.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
# Short tokens can be guessed over a network; 16 characters of
# ``secrets.token_urlsafe()`` carry ~96 bits.
MIN_TOKEN_LENGTH = 16
TOKEN_HINT = 'make one with: python -c "import secrets; print(secrets.token_urlsafe())"'


@attrs.frozen
class HttpAddress:
    """A parsed ``--http`` value.

    Attributes:
        host: a host name or IP address (IPv6 without brackets).
        port: 0 asks the kernel for a free port.
    """

    host: str
    port: int

    @property
    def bind(self) -> str:
        """The form hypercorn's ``bind`` takes: ``host:port``, ``[v6]:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name other than localhost: may resolve anywhere


def parse_http_address(text: str) -> HttpAddress:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` as an ``HttpAddress``.

    Raises:
        ConfigError: no port, a port outside 0..65535, or brackets that do not close.
    """
    value = text.strip()
    if value.startswith(("http://", "https://")):
        value = value.split("://", 1)[1].rstrip("/")
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"--http {text!r} must look like 127.0.0.1:8080 (HOST:PORT or :PORT)")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"--http {text!r}: port {port} is not in 0..65535")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ConfigError(f"--http {text!r}: an IPv6 address goes in brackets, [::1]:8080")
        host = host[1:-1]
    return HttpAddress(host=host or DEFAULT_HOST, port=port)


def check_http_settings(http: str | None, token: str | None) -> HttpAddress | None:
    """Check ``--http`` and ``--http-token`` together; the parsed address (None: off).

    Raises:
        ConfigError: a bad address, a non-loopback address without a token, a
            token without ``--http``, or a token shorter than ``MIN_TOKEN_LENGTH``.
    """
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"--http-token must be at least {MIN_TOKEN_LENGTH} characters; {TOKEN_HINT}"
        )
    if http is None:
        if token is not None:
            raise ConfigError("--http-token has nothing to guard: add --http HOST:PORT")
        return None
    address = parse_http_address(http)
    if not address.is_loopback and token is None:
        raise ConfigError(
            f"--http {http} is not a loopback address: pass --http-token (or http_token in "
            f"the config file) so only token holders see it, or use 127.0.0.1:{address.port}"
        )
    return address
