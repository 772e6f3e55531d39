import msgpack
import pytest

from zdf.errors import ProtocolError
from zdf.wire.codec import PROTOCOL_VERSION, Kind, decode, encode, packb


def test_round_trip_every_kind() -> None:
    for kind in Kind:
        msg = decode(encode(kind, "put", 7, {"key": b"k", "n": [1, 2]}))
        assert (msg.kind, msg.op, msg.rid, msg.body) == (kind, "put", 7, {"key": b"k", "n": [1, 2]})


@pytest.mark.parametrize(
    "frame, text",
    [
        (b"\xc1\xff garbage", "bad msgpack"),
        (packb([1, 2, 3]), "not a map"),
        (packb({"v": 99, "k": "req", "op": "x", "rid": 1}), "version"),
        (packb({"k": "req", "op": "x", "rid": 1}), "version"),
        (packb({"v": PROTOCOL_VERSION, "k": "zzz", "op": "x", "rid": 1}), "kind"),
        (packb({"v": PROTOCOL_VERSION, "k": "req", "op": 5, "rid": 1}), "operation"),
        (packb({"v": PROTOCOL_VERSION, "k": "req", "op": "x" * 65, "rid": 1}), "operation"),
        (packb({"v": PROTOCOL_VERSION, "k": "req", "op": "x", "rid": "1"}), "request id"),
        (packb({"v": PROTOCOL_VERSION, "k": "req", "op": "x", "rid": True}), "request id"),
        (b"", "bad msgpack"),
    ],
)
def test_rejects_malformed(frame: bytes, text: str) -> None:
    with pytest.raises(ProtocolError, match=text):
        decode(frame)


def test_non_string_map_keys_do_not_crash() -> None:
    frame = msgpack.packb({1: 2, "v": PROTOCOL_VERSION, "k": "ev", "op": "hb"})
    assert decode(frame).op == "hb"
