"""The RESP layer on hiredis (``transports.redis.resp``) and the blocking connection
(``transports.redis.resp_blocking``) under the sync fast path, against real Redis.

Tests on the shared server use their own key prefix; AUTH, NOSCRIPT and restart tests
run a private ``redis-server`` (the ``private_redis`` fixture).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import hiredis
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac.protocol import new_id
from celeriac.transports.redis import resp_blocking as _resp
from celeriac.transports.redis.resp import (
    NEED_DATA,
    Endpoint,
    ProtocolError,
    ReplyError,
    RespConnectionError,
    RespError,
    RespTimeoutError,
    encode_command,
    encode_commands,
    encode_reply,
    make_reader,
    parse_endpoint,
)
from celeriac.transports.redis.resp_blocking import Connection, Script
from celeriac.transports.redis.scripts import script
from servers import REDIS_URL, PrivateRedis, scratch_prefix

#: Unicode surrogates cannot be encoded: keep them out of generated text
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)

# --------------------------------------------------------------------------- codec


def test_encode_command_bytes() -> None:
    assert encode_command("SET", "k\u00e9", b"\x00v", 5, 1.5) == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n\x00v\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
    )
    assert encode_commands([("PING",), ("GET", "a")]) == (
        b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
    )
    assert encode_command("X", bytearray(b"ab"), memoryview(b"c")) == (
        b"*3\r\n$1\r\nX\r\n$2\r\nab\r\n$1\r\nc\r\n"
    )
    with pytest.raises(TypeError):
        encode_command("SET", "k", True)
    with pytest.raises(TypeError):
        encode_command("SET", "k", None)  # type: ignore[arg-type]


def _reply_values() -> st.SearchStrategy[Any]:
    leaves = (
        st.none()
        | st.binary(max_size=40)
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.text(
            alphabet=st.characters(blacklist_categories=SURROGATES, blacklist_characters="\r\n"),
            max_size=20,
        ).map(ReplyError)
    )
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=5), max_leaves=25)


def _comparable(value: Any) -> Any:
    if isinstance(value, ReplyError):
        return ("error", str(value))
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _parse_all(reader: Any, data: bytes, cuts: list[int]) -> list[Any]:
    """Feed ``data`` in pieces (cut at ``cuts``) and collect every reply."""
    out: list[Any] = []
    last = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        reader.feed(data[last:cut])
        last = cut
        while (reply := reader.gets()) is not NEED_DATA:
            out.append(reply)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_reply_values(), min_size=1, max_size=4), st.lists(st.integers(0, 10**6)))
def test_the_reader_reads_what_the_encoder_wrote(values: list[Any], cuts: list[int]) -> None:
    data = b"".join(encode_reply(v) for v in values)
    expected = [_comparable(v) for v in values]
    assert [_comparable(v) for v in _parse_all(make_reader(), data, cuts)] == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=30) | st.text(max_size=10) | st.integers(-999, 999), min_size=1))
def test_commands_parse_as_arrays_of_bulk_strings(args: list[Any]) -> None:
    reader = make_reader()
    reader.feed(encode_command(*args))
    as_bytes = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    assert reader.gets() == as_bytes


def test_resp3_types_as_hiredis_reads_them() -> None:
    data = (
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n_\r\n%2\r\n+a\r\n:1\r\n$1\r\nb\r\n*2\r\n:1\r\n_\r\n"
        b"~2\r\n:1\r\n:2\r\n,1.5\r\n#t\r\n#f\r\n(12345678901234567890\r\n=7\r\ntxt:abc\r\n"
        b"-WRONGTYPE Operation against a key\r\n*-1\r\n$-1\r\n*0\r\n$0\r\n\r\n"
    )
    ours = _parse_all(make_reader(), data, [1, 7, 30, 31, 80])
    theirs = _parse_all(hiredis.Reader(replyError=ReplyError, notEnoughData=NEED_DATA), data, [])
    assert [_comparable(v) for v in ours] == [_comparable(v) for v in theirs]
    assert ours[0] == [b"message", b"ch", b"x"]
    assert ours[2] == {b"a": 1, b"b": [1, None]}
    assert isinstance(ours[9], ReplyError) and ours[9].code == "WRONGTYPE"


def test_protocol_errors_and_partial_input() -> None:
    reader = make_reader()
    reader.feed(b"$5\r\nab")
    assert reader.gets() is NEED_DATA
    reader.feed(b"cde\r\n:7\r")
    assert reader.gets() == b"abcde"
    assert reader.gets() is NEED_DATA
    reader.feed(b"\n")
    assert reader.gets() == 7
    for bad in (b"?what\r\n", b"$x\r\n"):  # (hiredis does not check a bulk's CRLF)
        reader = make_reader()
        reader.feed(bad)
        with pytest.raises(ProtocolError):
            reader.gets()


def test_parse_endpoint() -> None:
    ep = parse_endpoint("redis://alice:s%40cret@example.com:6380/4", {"socket_timeout": 2})
    assert ep == Endpoint(
        host="example.com",
        port=6380,
        username="alice",
        password="s@cret",
        db=4,
        socket_timeout=2.0,
    )
    ep = parse_endpoint("redis://:pw@h/0?db=2&socket_connect_timeout=0.5&socket_keepalive=off")
    assert ep is not None
    assert (ep.password, ep.username, ep.db, ep.connect_timeout, ep.keepalive) == (
        "pw",
        None,
        2,
        0.5,
        False,
    )
    ep = parse_endpoint("unix:///tmp/r.sock?db=3")
    assert ep is not None and (ep.path, ep.db) == ("/tmp/r.sock", 3)
    ep = parse_endpoint("redis+socket:///tmp/r.sock")
    assert ep is not None and ep.path == "/tmp/r.sock"
    ep = parse_endpoint("rediss://h:1/0?ssl_cert_reqs=none")
    assert ep is not None and ep.tls and ep.ssl_context().check_hostname is False
    assert parse_endpoint("sentinel://h:26379") is None
    assert parse_endpoint("redis://h/0?unheard_of=1") is None  # redis-py keeps it
    assert parse_endpoint("redis://h/0?protocol=3") is None


# --------------------------------------------------------------------------- servers


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_prefix("test-resp") as value:
        yield value


def _conn(url: str, **options: Any) -> Connection:
    endpoint = parse_endpoint(url, options)
    assert endpoint is not None
    return Connection(endpoint)


def test_connection_commands_and_pipelining(prefix: str) -> None:
    conn = _conn(REDIS_URL)
    try:
        assert conn.execute("PING") == b"PONG"
        replies = conn.pipeline(
            [
                ("SET", prefix + "a", "1"),
                ("INCR", prefix + "a"),
                ("LPUSH", prefix + "a", "x"),
                ("GET", prefix + "a"),
                ("GET", prefix + "missing"),
                ("LRANGE", prefix + "none", 0, -1),
            ]
        )
        assert replies[:2] == [b"OK", 2]
        assert isinstance(replies[2], ReplyError) and replies[2].code == "WRONGTYPE"
        assert replies[3:] == [b"2", None, []]
        with pytest.raises(ReplyError, match="unknown command"):
            conn.execute("NO-SUCH-COMMAND")
        assert conn.execute("GET", prefix + "a") == b"2"  # still in step after the error
        big = os.urandom(300_000)
        assert conn.execute("SET", prefix + "big", big) == b"OK"
        assert conn.execute("GET", prefix + "big") == big
    finally:
        conn.close()


def test_replies_are_polled_for_only_while_polling_pays(prefix: str) -> None:
    conn = _conn(REDIS_URL)
    try:
        for _ in range(10):  # a near server: every reply is caught polling
            assert conn.execute("PING") == b"PONG"
        assert conn._misses == 0 and conn._rest == 0
        for _ in range(_resp._SPIN_MISSES):  # replies later than the polling lasts
            assert conn.execute("BLPOP", prefix + "empty", 0.01) is None
        assert conn._rest == _resp._SPIN_REST  # so the next reads sleep at once
        assert conn.execute("PING") == b"PONG"
        assert conn._rest == _resp._SPIN_REST - 1
    finally:
        conn.close()


def test_auth_and_select(private_redis: PrivateRedis) -> None:
    admin = redis.Redis(port=private_redis.port)
    try:
        admin.acl_setuser(
            "alice",
            enabled=True,
            passwords=["+s3cret"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        base = f"127.0.0.1:{private_redis.port}"
        for resp3 in (False, True):
            endpoint = parse_endpoint(f"redis://alice:s3cret@{base}/3")
            assert endpoint is not None
            conn = Connection(endpoint, resp3=resp3)
            assert conn.execute("SET", "who", f"alice-{resp3}") == b"OK"
            assert conn.execute("ACL", "WHOAMI") == b"alice"
            conn.close()
            assert (
                redis.Redis(port=private_redis.port, db=3).get("who") == f"alice-{resp3}".encode()
            )
        admin.config_set("requirepass", "topsecret")
        conn = _conn(f"redis://:topsecret@{base}/2")
        assert conn.execute("CLIENT", "INFO").split(b" db=")[1].startswith(b"2 ")
        conn.close()
        wrong = _conn(f"redis://alice:nope@{base}/0")
        with pytest.raises(RespConnectionError, match="refused the connection: WRONGPASS") as info:
            wrong.execute("PING")
        assert info.value.kind == "ConnectionError" and not wrong.connected
    finally:
        admin.close()


def test_noscript_falls_back_to_eval(private_redis: PrivateRedis) -> None:
    conn = _conn(private_redis.url)
    lua = Script("return ARGV[1] .. '!'", "")
    lua = Script("return ARGV[1] .. '!'", conn.execute("SCRIPT", "LOAD", lua.text).decode())
    assert lua.run(conn, ["a"]) == b"a!"
    conn.execute("SCRIPT", "FLUSH")
    assert lua.run(conn, ["b"], before=[("SET", "k", "v")]) == b"b!"  # NOSCRIPT -> EVAL
    assert conn.execute("SCRIPT", "EXISTS", lua.sha) == [1]  # EVAL cached it again
    assert lua.run(conn, ["c"]) == b"c!"
    with pytest.raises(ReplyError):
        Script("return redis.call('NOPE')", "0" * 40).run(conn, [])
    conn.close()


def test_reconnects_after_a_server_restart(private_redis: PrivateRedis) -> None:
    conn = _conn(private_redis.url, socket_connect_timeout=2)
    resp3 = Connection(conn.endpoint, resp3=True)
    assert conn.execute("SET", "k", "1") == b"OK"
    assert resp3.execute("GET", "k") == b"1"
    first = conn.execute("CLIENT", "ID")
    private_redis.kill()
    with pytest.raises(RespConnectionError) as info:
        conn.execute("GET", "k")  # the poll sees EOF, reconnecting finds no server
    assert info.value.kind == "ConnectionError" and "connecting to" in str(info.value)
    private_redis.start()
    # idle connections to the old server must not fail a call: checked before reuse
    assert conn.execute("GET", "k") == b"1"
    assert resp3.execute("GET", "k") == b"1"
    assert conn.execute("CLIENT", "ID") != first
    private_redis.kill()
    private_redis.start()
    assert conn.execute("GET", "k") == b"1"
    conn.close()
    resp3.close()


def test_socket_timeout(prefix: str) -> None:
    conn = _conn(REDIS_URL, socket_timeout=0.2)
    try:
        with pytest.raises(RespTimeoutError, match="Timeout reading"):
            conn.execute("BLPOP", prefix + "nothing", 5)  # the server answers in 5 s
        assert not conn.connected  # its reply would come later: out of step, dropped
        assert conn.execute("PING") == b"PONG"
        assert conn.execute("BLPOP", prefix + "nothing", 0.05) is None  # within the timeout
    finally:
        conn.close()


def test_unix_socket(private_redis: PrivateRedis) -> None:
    for url in (f"unix://{private_redis.socket}?db=1", f"redis+socket://{private_redis.socket}"):
        conn = _conn(url)
        assert conn.execute("SET", "u", url) == b"OK"
        assert conn.execute("GET", "u") == url.encode()
        conn.close()


def test_errors_carry_redis_py_type_names() -> None:
    assert RespConnectionError("x").kind == "ConnectionError"
    assert ReplyError("ERR x").kind == "ResponseError"
    assert issubclass(ReplyError, RespError)
    assert script("publish").sha  # the sync publisher runs the same script


def test_script_pack_and_ids() -> None:
    lua = Script("return 1", "a" * 40)
    args: list[Any] = ["p", "q\u00e9", 3, 1.5, b"\x00raw"]
    assert lua.pack(*args) == encode_command(*lua.command(*args))
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in list(ids)[:50]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


# --------------------------------------------------------------------------- deadline
def test_an_idle_connection_that_went_silent_is_replaced_after_one_health_check() -> None:
    """A connection forgotten while idle (a NAT or load-balancer timeout: no FIN, no
    RST) costs the next call one health-check interval, not the socket timeout: the PING
    before reuse gets no answer within the interval, and the call goes on a new one."""
    from faults.proxy import FaultProxy

    host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].split(":")
    with FaultProxy(host, int(port)) as proxy:
        options = {"health_check_interval": "0.5", "socket_timeout": "10"}
        endpoint = parse_endpoint(f"redis://{host}:{proxy.port}/0", options)
        assert endpoint is not None
        conn = Connection(endpoint)
        try:
            assert conn.execute("PING") in {b"PONG", "PONG"}
            assert proxy.blackhole() == 1
            time.sleep(0.6)  # idle past the interval: the idleness is what is tested
            began = time.monotonic()
            assert conn.execute("PING") in {b"PONG", "PONG"}
            assert time.monotonic() - began < 5  # the socket timeout would be 10 s
            assert proxy.connections == 2
            # a connection in use is not asked: no PING while idle less than the interval
            assert conn.execute("PING") in {b"PONG", "PONG"}
            assert proxy.connections == 2
        finally:
            conn.close()
