"""Fetching images named by http(s) URLs: concurrent, with timeouts, retries and a size cap.

One call fetches one batch of URLs (a chunk of a corpus) and returns, per URL, either the
body or a ``FetchError`` saying why not; a failure never raises, so one dead link costs one
item, not the batch. Transient failures (timeouts, dropped connections, 5xx, 429) are
retried with exponential backoff; the others (4xx, oversized bodies) are final at once.

Only public addresses are fetched unless the policy allows private networks: a corpus
manifest comes from a user, and a URL naming 127.0.0.1, a LAN host or the cloud metadata
endpoint (169.254.169.254) would otherwise make the indexer read the service's own
network for them (SSRF). The check sits in the network backend, on the very address the
socket connects to, so it holds for every redirect hop and for a name whose DNS answer
changes between lookups (rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0  # never sleep longer than this on a server's Retry-After


@dataclass(frozen=True)
class FetchPolicy:
    """How URLs are fetched. Defaults suit a corpus of web images."""

    timeout_s: float = 20.0          # per attempt: connect, each read, pool wait
    retries: int = 2                 # attempts after the first, for transient failures only
    backoff_s: float = 0.5           # first retry waits this, then doubles
    max_bytes: int = 32 * 1024 * 1024
    concurrency: int = 16            # requests in flight at once
    max_redirects: int = 5
    user_agent: str = "prolip-retrieval-indexer/0.1"
    # loopback, private, link-local, shared, reserved ... addresses are refused unless allowed
    allow_private_networks: bool = False

    def __post_init__(self):
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise ValueError("fetch timeout must be positive and retries/backoff non-negative")
        if self.max_bytes < 1 or self.concurrency < 1:
            raise ValueError("fetch max_bytes and concurrency must be >= 1")


class FetchError(Exception):
    """A URL could not be fetched; ``reason`` is the line recorded for the item."""

    def __init__(self, url: str, reason: str, retryable: bool = False, retry_after: float | None = None):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait (429/503)


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def check_url(url: str) -> str:
    """The URL if it is an absolute http(s) URL with a host that httpx can parse, else ValueError.

    Planning calls this, so a URL no fetch could ever use (bad port, octal or malformed IPv4,
    an IPv6 zone id ...) is rejected with its reason before the job runs.
    """
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as error:  # e.g. an unclosed '[' in the host
        raise ValueError(f"{url!r} is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise ValueError(f"{url!r} is not an absolute http(s) URL")
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError, ValueError) as error:
        raise ValueError(f"{url!r} is not a valid URL ({error})") from None
    if "%" in hostname:
        raise ValueError(f"{url!r}: IPv6 zone ids name an interface of this machine and are not fetched")
    return url


def fetch_all(urls: Sequence[str], policy: FetchPolicy | None = None) -> list[bytes | FetchError]:
    """Fetch every URL; result i is URL i's body or the ``FetchError`` that ended it.

    Runs its own event loop, so call it from a plain (non-async) thread.
    """
    if not urls:
        return []
    return asyncio.run(_fetch_all(list(urls), policy or FetchPolicy()))


class BlockedAddressError(Exception):
    """A URL's host resolves to an address the policy does not fetch from (final, not retried)."""


class UnresolvedHostError(Exception):
    """A URL's host name does not resolve; ``retryable`` when the resolver said "try again"."""

    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


PRIVATE_URLS_HINT = ("pass --allow-private-urls (PROLIP_ALLOW_PRIVATE_URLS=true for the service) "
                     "to fetch from them on a trusted network")


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable (IPv4-mapped IPv6 judged as its IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving names itself and connecting only to public addresses."""

    def __init__(self, allow_private: bool):
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            # EAI_AGAIN is the resolver's "try again later"; no such name is final
            raise UnresolvedHostError(f"host {host!r} does not resolve ({error.strerror or error})",
                                      retryable=error.errno == socket.EAI_AGAIN) from None
        except (UnicodeError, ValueError) as error:  # a label the IDNA codec refuses (empty, too long)
            raise UnresolvedHostError(f"host {host!r} is not a valid host name ({error})", retryable=False) from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        blocked = [address for address in addresses if not is_public(address)]
        if blocked and not self._allow_private:
            # any non-public answer refuses the host: picking the public ones would let a
            # name that mixes both reach the private one on a later lookup
            raise BlockedAddressError(f"{host} resolves to a non-public address ({blocked[0]}); private "
                                      f"networks are not fetched unless allowed: {PRIVATE_URLS_HINT}")
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as failed:
                error = failed
        raise error or httpcore.ConnectError(f"{host} has no address")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        raise BlockedAddressError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _transport(policy: FetchPolicy, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx has no public hook for the network backend; its pool is rebuilt with the same
    # settings plus ours (tests/indexer/jobs/test_fetch.py fails if this stops working)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=transport._pool._ssl_context, max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
        network_backend=_PublicOnlyBackend(policy.allow_private_networks))
    return transport


async def _fetch_all(urls: list[str], policy: FetchPolicy) -> list[bytes | FetchError]:
    limits = httpx.Limits(max_connections=policy.concurrency, max_keepalive_connections=policy.concurrency)
    gate = asyncio.Semaphore(policy.concurrency)
    async with httpx.AsyncClient(timeout=policy.timeout_s, limits=limits, follow_redirects=True,
                                 max_redirects=policy.max_redirects, transport=_transport(policy, limits),
                                 headers={"User-Agent": policy.user_agent}) as client:
        async def one(url: str) -> bytes | FetchError:
            async with gate:
                return await _fetch_with_retries(client, url, policy)

        return await asyncio.gather(*(one(url) for url in urls))


async def _fetch_with_retries(client: httpx.AsyncClient, url: str, policy: FetchPolicy) -> bytes | FetchError:
    try:
        check_url(url)
    except ValueError as error:
        return FetchError(url, str(error))
    delay = policy.backoff_s
    for attempt in range(policy.retries + 1):
        try:
            return await _fetch_once(client, url, policy)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever breaks on one URL fails that URL, never the batch
            if not isinstance(error, FetchError):
                log.debug("fetching %s failed unexpectedly", url, exc_info=True)
                error = FetchError(url, f"cannot fetch ({type(error).__name__}: {error})")
            if not error.retryable or attempt == policy.retries:
                if attempt:
                    error.reason += f" (after {attempt + 1} attempts)"
                return error
            wait = error.retry_after if error.retry_after is not None else delay
            log.debug("retrying %s in %.2fs: %s", url, wait, error.reason)
            await asyncio.sleep(wait)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


async def _fetch_once(client: httpx.AsyncClient, url: str, policy: FetchPolicy) -> bytes:
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise FetchError(url, f"HTTP {response.status_code}",
                                 retryable=response.status_code in RETRYABLE_STATUS,
                                 retry_after=_retry_after(response))
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise FetchError(url, f"body of {int(declared)} bytes exceeds the cap of {policy.max_bytes} bytes")
            body = bytearray()
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) > policy.max_bytes:
                    raise FetchError(url, f"body exceeds the cap of {policy.max_bytes} bytes")
            return bytes(body)
    except BlockedAddressError as error:
        raise FetchError(url, str(error)) from None
    except UnresolvedHostError as error:
        raise FetchError(url, str(error), retryable=error.retryable) from None
    except httpx.InvalidURL as error:
        raise FetchError(url, f"invalid URL ({error})") from None
    except httpx.TimeoutException:
        raise FetchError(url, f"timed out after {policy.timeout_s:g}s", retryable=True) from None
    except httpx.TooManyRedirects:
        raise FetchError(url, f"more than {policy.max_redirects} redirects") from None
    except httpx.UnsupportedProtocol as error:
        raise FetchError(url, f"unsupported protocol ({error})") from None
    except (httpx.TransportError, httpx.DecodingError) as error:
        raise FetchError(url, f"connection failed ({type(error).__name__}: {error})", retryable=True) from None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None
