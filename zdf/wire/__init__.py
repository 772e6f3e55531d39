"""The wire: socket creation, the msgpack envelope, the reactor and RPC over ZeroMQ."""

from zdf.wire.codec import PROTOCOL_VERSION, Kind, Message, decode, encode
from zdf.wire.reactor import Reactor, Timer
from zdf.wire.rpc import DEFER, Call, Channel, RpcClient
from zdf.wire.sockets import close_socket, context, endpoint, make_socket

__all__ = [
    "DEFER",
    "PROTOCOL_VERSION",
    "Call",
    "Channel",
    "Kind",
    "Message",
    "Reactor",
    "RpcClient",
    "Timer",
    "close_socket",
    "context",
    "decode",
    "encode",
    "endpoint",
    "make_socket",
]
