"""A hostile host against the fetcher, the crawler and `scan URL` (issue 13): compression
bombs stacked in content codings, bodies that trickle, redirects into cloud metadata.

Bombs run in child processes whose peak memory is measured: a few KB that would expand to
4 GiB must fail at the size cap, with one line, under 200 MB. The metadata tests use a
resolver stub and a network backend that records every connection it is asked to open
(and opens none off loopback), so they show that no connection is even attempted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import zlib
from pathlib import Path

import httpcore
import pytest
from hostile_http import MIB, HostileServer, Reply, encode, gzip_zeros, run_measured, stacked_bomb
from support import registered_store

from monitor.config import ConfigError, CrawlSettings, Target, load_config
from monitor.fetch import (
    MAX_CODINGS,
    BlockedAddress,
    BoundedDecoder,
    Fetcher,
    FetchError,
    RobotsDisallowed,
    address_class,
    check_destination,
)

BOMB_MIB = 4096          # what each bomb expands to: 4 GiB
PEAK_MB = 200
CAP = CrawlSettings().max_response_bytes
STACKS = [["gzip", "gzip"], ["deflate", "gzip"]]
FAST = CrawlSettings(host_delay=0.001, retries=0, request_timeout=5)


@pytest.fixture(scope="module")
def host():
    server = HostileServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def bombs(host: HostileServer) -> dict[str, str]:
    """Coding stack ("gzip,gzip") -> URL of a bomb served with that Content-Encoding."""
    urls = {}
    for stack in STACKS:
        body = stacked_bomb(stack, BOMB_MIB)
        assert len(body) < 16_000, "a few KB on the wire"
        name = ",".join(stack)
        urls[name] = host.serve(f"/bomb-{name.replace(',', '-')}",
                                Reply(body, headers={"Content-Encoding": ", ".join(stack)}))
    return urls


def target(url: str, allow_private: bool = True, **kw) -> Target:
    return Target(name="hostile", kind="feed", url=url, interval=60, jitter=0,
                  allow_private=allow_private, **kw)


def get(url: str, settings: CrawlSettings = FAST, **kw):
    async def go():
        async with Fetcher(settings) as f:
            return await f.get(url, target(url), **kw)
    return asyncio.run(go())


def one_line_error(call, *needles: str, error: type[Exception] = FetchError) -> str:
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def check_one_line(stderr: str, *needles: str) -> str:
    """The child's stderr, which must be exactly one line naming every needle."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in stderr
    return lines[0]


# ------------------------------------------------------------------ bombs, in child processes

FETCH_ONE = """
import asyncio, sys
from monitor.config import CrawlSettings, Target
from monitor.fetch import Fetcher, FetchError

async def main(url):
    target = Target(name="t", kind="feed", url=url, interval=60, jitter=0, allow_private=True)
    async with Fetcher(CrawlSettings(host_delay=0.001, retries=0)) as fetcher:
        await fetcher.get(url, target)

try:
    asyncio.run(main(sys.argv[1]))
except FetchError as exc:
    sys.exit(str(exc))
"""


def write_config(folder: Path, url: str | None = None, **crawl: str) -> Path:
    settings = {"host_delay": '"10ms"', "retries": "0", **crawl}
    text = "[database]\npath = \"ww.db\"\n\n[crawl]\n" + "".join(
        f"{k} = {v}\n" for k, v in settings.items())
    if url:
        text += (f'\n[[targets]]\nname = "hostile"\nkind = "feed"\nurl = "{url}"\n'
                 f'allow_private = true\n')
    path = folder / "config.toml"
    path.write_text(text)
    return path


def ww(folder: Path, *args: str, timeout: float = 60):
    return run_measured([sys.executable, "-m", "monitor", "--config", "config.toml", *args],
                        cwd=folder, timeout=timeout)


@pytest.mark.parametrize("stack", [",".join(s) for s in STACKS])
@pytest.mark.slow
def test_bomb_through_the_fetcher(stack, bombs, tmp_path):
    result, peak = run_measured([sys.executable, "-c", FETCH_ONE, bombs[stack]], cwd=tmp_path,
                                timeout=60)
    assert result.returncode == 1, result.stderr[-2000:]
    check_one_line(result.stderr, f"response from {bombs[stack]} exceeded the {CAP}-byte cap")
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"


@pytest.mark.parametrize("stack", [",".join(s) for s in STACKS])
@pytest.mark.slow
def test_bomb_through_a_crawl(stack, bombs, tmp_path):
    write_config(tmp_path, bombs[stack])
    result, peak = ww(tmp_path, "crawl", "--format", "json")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    [row] = json.loads(result.stdout)
    assert row["status"] != "ok"
    error = row["error"]
    assert "\n" not in error and f"exceeded the {CAP}-byte cap" in error, error
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, demo_release) -> Path:
    """A database with the demo release's tensors registered: `scan` reads nothing until
    there is something to compare with."""
    db = tmp_path_factory.mktemp("hostile-scan") / "release.db"
    registered_store(db, demo_release).close()
    return db


@pytest.mark.parametrize("stack", [",".join(s) for s in STACKS])
@pytest.mark.slow
def test_bomb_through_scan_url(stack, bombs, registry, tmp_path):
    write_config(tmp_path)
    result, peak = ww(tmp_path, "--db", str(registry), "scan", "--allow-private", bombs[stack])
    assert result.returncode == 1, result.stderr[-2000:]
    check_one_line(result.stderr, f"exceeded the {CAP}-byte cap")
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"


@pytest.mark.slow
def test_bomb_as_a_range_answer(host, registry, tmp_path):
    """The remote reader asks for `Accept-Encoding: identity`; a 206 that claims the range
    asked for but comes coded twice is still decoded within the cap, and refused."""
    url = host.serve("/ranged.safetensors", Reply(
        stacked_bomb(["gzip", "gzip"], BOMB_MIB), 206,
        {"Content-Encoding": "gzip, gzip", "Content-Range": "bytes 0-65535/10000000"}))
    write_config(tmp_path)
    result, peak = ww(tmp_path, "--db", str(registry), "scan", "--allow-private", url)
    assert result.returncode == 1, result.stderr[-2000:]
    check_one_line(result.stderr, "-byte cap")
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"
    path, headers = host.requests[-1]
    assert path == "/ranged.safetensors" and headers["accept-encoding"] == "identity"


# ------------------------------------------------------------------------ content codings


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


PAGE = b"<rss><channel><title>heron-7b weights</title></channel></rss>\n" * 500


@pytest.mark.parametrize("header, body", [
    ("", PAGE),
    ("identity", PAGE),
    ("gzip", encode(PAGE, ["gzip"])),
    ("x-gzip", encode(PAGE, ["gzip"])),
    ("deflate", encode(PAGE, ["deflate"])),
    ("deflate", raw_deflate(PAGE)),
    ("gzip, gzip", encode(PAGE, ["gzip", "gzip"])),
    ("deflate, gzip", encode(PAGE, ["deflate", "gzip"])),
    ("GZIP , identity", encode(PAGE, ["gzip"])),
    ("gzip", encode(PAGE[:1000], ["gzip"]) + b"\0\0\0" + encode(PAGE[1000:], ["gzip"])),
], ids=["none", "identity", "gzip", "x-gzip", "zlib-deflate", "raw-deflate", "gzip-gzip",
        "deflate-gzip", "case-and-identity", "multi-member-gzip"])
def test_codings_we_read(header, body, host):
    url = host.serve(f"/ok-{len(host.routes)}", Reply(body, headers={"Content-Encoding": header}))
    assert get(url).body == PAGE
    path, headers = host.requests[-1]
    assert headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize("header, body, expected", [
    ("gzip", encode(PAGE, ["gzip"]) + b"\0" + encode(b"more", ["gzip"]), PAGE + b"more"),
    ("deflate", encode(PAGE, ["deflate"]), PAGE),
    ("deflate", raw_deflate(PAGE), PAGE),
    ("deflate, gzip", encode(PAGE, ["deflate", "gzip"]), PAGE),
])
def test_decoding_does_not_depend_on_where_chunks_break(header, body, expected):
    """The network may hand over a body in any slices (a deflate header split after its
    first byte, a gzip member boundary mid-chunk): one byte at a time decodes the same."""
    decoder = BoundedDecoder(header.split(","), cap=10 * len(PAGE))
    out = b"".join(b"".join(decoder.decode(body[i:i + 1])) for i in range(len(body)))
    assert out + b"".join(decoder.finish()) == expected


@pytest.mark.parametrize("stack", [["gzip"], ["gzip", "gzip"], ["deflate", "gzip"]])
@pytest.mark.parametrize("size", [999, 1000, 1001])
def test_cap_at_the_boundary_counts_decoded_bytes(stack, size, host):
    """The cap is on decoded bytes: exactly the cap passes, one byte more fails (and the
    compressed body is far below the cap, so only the decoded count can tell)."""
    data = b"a" * size
    url = host.serve(f"/edge-{'-'.join(stack)}-{size}",
                     Reply(encode(data, stack), headers={"Content-Encoding": ", ".join(stack)}))
    if size <= 1000:
        assert get(url, max_bytes=1000).body == data
    else:
        one_line_error(lambda: get(url, max_bytes=1000), f"{url} exceeded the 1000-byte cap")


@pytest.mark.parametrize("size", [999, 1000, 1001, 5 * MIB])
def test_truncation_keeps_exactly_the_cap(size, host):
    """robots.txt's mode (`truncate`): the decoded body stops at the cap, whatever it
    would have expanded to."""
    url = host.serve(f"/trunc-{size}", Reply(encode(bytes(size), ["gzip", "gzip"]),
                                             headers={"Content-Encoding": "gzip, gzip"}))

    async def go():
        async with Fetcher(FAST) as f:
            response, _ = await f._fetch(url, target(url), headers=None, max_bytes=1000,
                                         robots=False, truncate=True)
            return response.body

    assert asyncio.run(go()) == bytes(min(size, 1000))


def test_robots_bomb_is_read_truncated(host):
    """A robots.txt whose rules are followed by 4 GiB of zeros, coded twice: the first
    512 KB are read and obeyed, the rest never expands."""
    rules = b"User-agent: *\nDisallow: /private\n"
    body = encode(gzip_zeros(BOMB_MIB, prefix=rules), ["gzip"])
    host.serve("/robots.txt", Reply(body, headers={"Content-Encoding": "gzip, gzip"}))
    host.serve("/public", Reply(b"fine"))

    async def go(path):
        async with Fetcher(FAST) as f:
            return await f.get(host.base + path, target(host.base + path, obey_robots=True))

    try:
        one_line_error(lambda: asyncio.run(go("/private/page")), "robots.txt disallows",
                       error=RobotsDisallowed)
        assert asyncio.run(go("/public")).body == b"fine"
    finally:
        del host.routes["/robots.txt"]


def test_too_many_codings(host):
    body = encode(PAGE, ["gzip"] * (MAX_CODINGS + 1))
    url = host.serve("/layers", Reply(body, headers={"Content-Encoding": "gzip, gzip, gzip"}))
    one_line_error(lambda: get(url), url, "3 stacked content codings, more than the 2 accepted")


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "x-compress", "gzip, br",
                                    "identity, rot13"])
def test_unsupported_coding(coding, host):
    url = host.serve(f"/coded-{len(host.routes)}",
                     Reply(b"\x8b\x00 whatever the server claims", headers={"Content-Encoding": coding}))
    one_line_error(lambda: get(url), url, "unsupported Content-Encoding")


def test_no_body_needs_no_decoding(host):
    """Nothing to decode, nothing to refuse (a 204 or an empty page with any label)."""
    url = host.serve("/empty-br", Reply(b"", headers={"Content-Encoding": "br"}))
    assert get(url).body == b""


GOOD_GZIP = encode(PAGE, ["gzip"])


@pytest.mark.parametrize("header, body, needle", [
    ("gzip", b"not gzip at all", "corrupt gzip stream"),
    ("gzip", GOOD_GZIP[:-8] + bytes(8), "corrupt gzip stream"),          # CRC and size wrong
    ("gzip", GOOD_GZIP[:len(GOOD_GZIP) // 2], "gzip stream ends early"),
    ("gzip", GOOD_GZIP + b"trailing junk", "corrupt gzip stream"),
    ("deflate", encode(PAGE, ["deflate"]) + b"junk", "data after the end of the deflate stream"),
    ("deflate", b"\x78\x9c" + bytes(range(256)) * 4, "corrupt deflate stream"),
    ("deflate", b"x", "deflate stream ends early"),
    ("gzip, gzip", encode(b"not gzip", ["gzip"]), "corrupt gzip stream"),
], ids=["not-gzip", "bad-trailer", "truncated", "junk-after", "deflate-junk-after",
        "deflate-garbage", "one-byte", "inner-layer"])
def test_corrupt_streams(header, body, needle, host):
    url = host.serve(f"/corrupt-{len(host.routes)}", Reply(body, headers={"Content-Encoding": header}))
    one_line_error(lambda: get(url), f"cannot read the response from {url}", needle)


def test_range_requests_stay_uncompressed_across_origins(host):
    """A hub's file redirects to its CDN (another origin): the remote reader's
    `Accept-Encoding: identity` goes along with the Range, or the CDN could compress the
    range and the byte counts would be of compressed bytes."""
    cdn = host.serve("/cdn/file", Reply(b"data"))
    start = host.serve("/hub/file", Reply(b"", 302, {"Location": cdn.replace("127.0.0.1",
                                                                             "localhost")}))
    get(start, headers={"Range": "bytes=0-3", "Accept-Encoding": "identity"})
    path, headers = host.requests[-1]
    assert path == "/cdn/file"
    assert headers["accept-encoding"] == "identity" and headers["range"] == "bytes=0-3"


# ------------------------------------------------------------------------------ deadline

TRICKLE = Reply(b"x" * 200, trickle=0.5)  # a byte every 0.5 s: never silent for long


def test_trickle_fails_at_the_deadline_and_is_not_retried(host):
    url = host.serve("/trickle-fetch", TRICKLE) + "?token=SECRET"
    settings = CrawlSettings(host_delay=0.001, retries=2, request_timeout=5, request_deadline=1)
    message = one_line_error(lambda: get(url, settings), "request_deadline of 1s",
                             url.replace("SECRET", "REDACTED"))
    assert "SECRET" not in message
    assert host.count("/trickle-fetch") == 1


@pytest.mark.slow
def test_waiting_for_the_hosts_turn_does_not_count(host):
    """Two requests to one host 1.5 s apart by host_delay, each with a 1 s deadline: the
    second waits for its slot first, and still has its whole deadline for the answer."""
    url = host.serve("/quick", Reply(b"quick"))
    settings = CrawlSettings(host_delay=1.5, retries=0, request_deadline=1)

    async def go():
        async with Fetcher(settings) as f:
            t = target(url, obey_robots=False)
            return [(await f.get(url, t)).body for _ in range(2)]

    assert asyncio.run(go()) == [b"quick", b"quick"]


def test_request_deadline_is_validated(tmp_path):
    write_config(tmp_path, request_deadline='"90s"')
    assert load_config(tmp_path / "config.toml").crawl.request_deadline == 90
    for bad in ('"0s"', "0", '"soon"', "-1"):
        write_config(tmp_path, request_deadline=bad)
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path / "config.toml")
        assert "crawl.request_deadline" in str(info.value)


DEADLINE = 2


@pytest.mark.slow
def test_scan_url_of_a_trickle_fails_at_its_deadline(host, registry, tmp_path):
    url = host.serve("/trickle-scan.safetensors", TRICKLE)
    write_config(tmp_path, request_deadline=f'"{DEADLINE}s"', retries="2")
    start = time.monotonic()
    result, _ = ww(tmp_path, "--db", str(registry), "scan", "--allow-private", url)
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr[-2000:]
    check_one_line(result.stderr, url, f"request_deadline of {DEADLINE}s")
    assert elapsed < DEADLINE + 10
    assert host.count("/trickle-scan.safetensors") == 1


@pytest.mark.slow
def test_crawl_of_a_trickle_fails_at_its_deadline(host, tmp_path):
    url = host.serve("/trickle-feed", TRICKLE)
    write_config(tmp_path, url, request_deadline=f'"{DEADLINE}s"', retries="2")
    start = time.monotonic()
    result, _ = ww(tmp_path, "crawl", "--format", "json")
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr[-2000:]
    [row] = json.loads(result.stdout)
    assert "\n" not in row["error"] and f"request_deadline of {DEADLINE}s" in row["error"]
    assert elapsed < DEADLINE + 10
    assert host.count("/trickle-feed") == 1


# ---------------------------------------------------------------- never-allowed addresses


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records every connection the pinned transport asks for; opens only loopback ones,
    so even a regression sends no packet beyond this machine."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None,
                          socket_options=None):
        self.connects.append((host, port))
        if not host.startswith("127."):
            raise httpcore.ConnectError(f"test backend: no connection to {host}")
        return await self._inner.connect_tcp(host, port, timeout=timeout,
                                             local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("test backend: no unix sockets")

    async def sleep(self, seconds):
        await self._inner.sleep(seconds)


class StubResolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers, self.asked = answers, []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.answers[host]


def fetch_recorded(url: str, answers: dict[str, list[str]], allow_private: bool = True):
    """(result or exception, backend, resolver) of one GET through the pinned transport."""
    backend, resolver = RecordingBackend(), StubResolver(answers)

    async def go():
        async with Fetcher(FAST, resolver=resolver, network_backend=backend) as f:
            return await f.get(url, target(url, allow_private=allow_private, obey_robots=False))

    try:
        outcome = asyncio.run(go())
    except FetchError as exc:
        outcome = exc
    return outcome, backend, resolver


METADATA_URL = "http://169.254.169.254/latest/meta-data/"


def test_redirect_to_metadata_refused_before_any_connection(host):
    """The issue's case: an allow_private target redirected to 169.254.169.254."""
    url = host.serve("/to-metadata", Reply(b"", 302, {"Location": METADATA_URL}))
    outcome, backend, resolver = fetch_recorded(url, {})
    assert isinstance(outcome, BlockedAddress), outcome
    assert "\n" not in str(outcome) and "169.254.169.254" in str(outcome)
    assert "no target may reach" in str(outcome)
    assert backend.connects == [("127.0.0.1", host.port)], "only the loopback host"
    assert resolver.asked == []


@pytest.mark.parametrize("answer", [
    ["169.254.169.254"], ["fd00:ec2::254"], ["::ffff:169.254.169.254"], ["64:ff9b::a9fe:a9fe"],
    ["100.100.100.200"], ["fd20:ce::254"], ["168.63.129.16"], ["127.0.0.1", "169.254.169.254"],
])
def test_redirect_to_a_name_resolving_to_metadata(answer, host):
    url = host.serve("/to-name", Reply(b"", 302, {"Location": "http://metadata.test/latest/"}))
    outcome, backend, resolver = fetch_recorded(url, {"metadata.test": answer})
    assert isinstance(outcome, BlockedAddress), outcome
    assert "metadata.test resolves to" in str(outcome)
    assert resolver.asked == ["metadata.test"]
    assert backend.connects == [("127.0.0.1", host.port)]


@pytest.mark.parametrize("location", [
    "http://[fd00:ec2::254]/latest/", "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/", "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::1]/",
    "http://100.100.100.200/", "http://168.63.129.16/", "http://169.254.170.2/v2/credentials",
    "http://[fe80::1]/", "http://0.0.0.0/", "http://[::]/", "http://224.0.0.1/",
    "http://255.255.255.255/", "http://240.0.0.1/", "http://192.0.0.192/",
])
def test_redirect_to_never_allowed_literals(location, host):
    url = host.serve(f"/to-literal-{len(host.routes)}", Reply(b"", 302, {"Location": location}))
    outcome, backend, resolver = fetch_recorded(url, {})
    assert isinstance(outcome, BlockedAddress), outcome
    assert "no target may reach" in str(outcome)
    assert backend.connects == [("127.0.0.1", host.port)]


def test_allow_private_resolves_and_pins_names(host):
    """A name for a loopback service is resolved, checked and connected to at the address
    checked (`.test` names exist in no DNS, so only the pinned address can answer)."""
    url = host.serve("/local", Reply(b"local service"))
    named = url.replace("127.0.0.1", "jackett.test")
    outcome, backend, resolver = fetch_recorded(named, {"jackett.test": ["127.0.0.1"]})
    assert not isinstance(outcome, Exception), outcome
    assert outcome.body == b"local service"
    assert resolver.asked == ["jackett.test"]
    assert backend.connects == [("127.0.0.1", host.port)]


def test_allow_private_name_resolving_to_metadata_never_connects():
    outcome, backend, resolver = fetch_recorded("http://jackett.test:9117/api",
                                                {"jackett.test": ["169.254.169.254"]})
    assert isinstance(outcome, BlockedAddress), outcome
    assert backend.connects == []


def test_without_allow_private_loopback_stays_closed(host):
    url = host.serve("/closed", Reply(b"secret"))
    outcome, backend, _ = fetch_recorded(url, {}, allow_private=False)
    assert isinstance(outcome, BlockedAddress) and "allow_private" in str(outcome)
    assert backend.connects == []


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "172.31.255.254",
    "192.168.1.1", "fc00::1", "fd12:3456::1", "100.64.0.1", "100.127.255.254",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1",
])
def test_what_allow_private_opens(address):
    assert address_class(address)[0] == "private"


@pytest.mark.parametrize("address", [
    "169.254.169.254", "169.254.0.23", "fe80::1", "fe80::1%eth0", "fd00:ec2::254", "fd00:ec2::23",
    "fd20:ce::254", "fd00:c1::a9fe:a9fe", "100.100.100.200", "168.63.129.16", "0.0.0.0",
    "0.1.2.3", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "240.0.0.1", "192.0.0.192",
    "192.0.2.1", "198.18.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe",
    "64:ff9b::7f00:1", "2002:a9fe:a9fe::1", "2002:7f00:1::1", "2001:db8::1", "::127.0.0.1",
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo to 169.254.169.254 (stored inverted)
])
def test_never_allowed(address):
    kind, what = address_class(address)
    assert kind == "never" and what, (address, kind)


@pytest.mark.parametrize("address", [
    "93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34",
    "2002:5db8:d822::1", "64:ff9b::5db8:d822",
])
def test_public(address):
    assert address_class(address) == ("public", "")


def test_socks_checks_literals_only():
    """Through a SOCKS proxy the proxy resolves names, so only literals can be refused,
    and metadata literals are refused even with allow_private."""
    def check(url: str) -> list[str]:
        return asyncio.run(check_destination(url, allow_private=True, remote_dns=True,
                                             resolver=StubResolver({})))

    with pytest.raises(BlockedAddress, match="no target may reach"):
        check(METADATA_URL)
    assert check("http://10.0.0.5:9117/api") == ["10.0.0.5"]
    assert check("http://jackett.lan:9117/api") == []
