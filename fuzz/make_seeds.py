#!/usr/bin/env python3
"""Writes the hand-made seeds of the structured fuzz targets (dialer_ops, listener_ops,
conn_ops) into corpus/<target>/, encoding op lists the way `arbitrary` 1.x decodes
them (integers little-endian, enum variant i of n as the u32 ceil(i * 2^32 / n),
collections as a 1 byte before each element and a 0 byte at the end). Strings are
avoided: `arbitrary` takes their length from the end of the input.

The seeds of control_decoder and route_parser are plain files (see lib.rs for their
formats). Run from fuzz/: python3 make_seeds.py
"""
import os


class Enc:
    def __init__(self):
        self.b = bytearray()

    def u8(self, v):
        self.b.append(v)
        return self

    def u16(self, v):
        self.b += v.to_bytes(2, "little")
        return self

    def u32(self, v):
        self.b += v.to_bytes(4, "little")
        return self

    def u64(self, v):
        self.b += v.to_bytes(8, "little")
        return self

    def bool(self, v):
        return self.u8(1 if v else 0)

    def variant(self, i, n):
        x = -(-(i << 32) // n)
        assert (x * n) >> 32 == i and x < 2**32
        return self.u32(x)

    def vec_u8(self, data):
        for byte in data:
            self.u8(1).u8(byte)
        return self.u8(0)


# ---- dialer_ops --------------------------------------------------------------------
ROLE = {"none": 0, "control": 1, "data": 2}
CRED = {"none": 0, "good": 1, "bad": 2}


def token(e, t):
    if t is None:
        e.variant(0, 3)
    elif t == "bogus":
        e.variant(2, 3)
    else:
        e.variant(1, 3).u8(t)


def dialer(config, seed, ops):
    e = Enc()
    for v in config:  # anon, max_sessions, max_per_id, max_pending, max_spares, timeout, keepalive
        e.u8(v)
    e.u64(seed)
    for op in ops:
        e.u8(1)
        kind = op[0]
        if kind == "revdial":
            _, conn, ident, role, tok, cred = op
            e.variant(0, 7).u8(conn).u8(ident).variant(ROLE[role], 3)
            token(e, tok)
            e.variant(CRED[cred], 3)
        elif kind == "dial":
            e.variant(1, 7).u8(op[1])
        elif kind == "cancel":
            e.variant(2, 7).u8(op[1])
        elif kind == "control":
            _, session, msg, split = op
            e.variant(3, 7).u8(session)
            names = ["pickup", "keepalive", "connready", "unknown", "garbage", "partial"]
            if isinstance(msg, tuple):  # ("pickup", token)
                e.variant(0, 6)
                token(e, msg[1])
            else:
                e.variant(names.index(msg), 6)
            e.u8(split)
        elif kind == "close_stream":
            e.variant(4, 7).u8(op[1])
        elif kind == "close_conn":
            e.variant(5, 7).u8(op[1])
        elif kind == "advance":
            e.variant(6, 7).u16(op[1])
    e.u8(0)
    return bytes(e.b)


DIALER = {
    "register-spare-dial": dialer(
        [0, 5, 1, 3, 2, 4, 9],
        1,
        [
            ("revdial", 0, 0, "control", None, "good"),
            ("revdial", 0, 0, "data", None, "good"),
            ("dial", 0),
            ("dial", 0),
            ("revdial", 0, 0, "data", 1, "good"),
            ("advance", 100),
        ],
    ),
    "token-and-fifo-matching": dialer(
        [2, 5, 2, 7, 0, 4, 9],
        2,
        [
            ("revdial", 0, 2, "none", None, "none"),
            ("dial", 2),
            ("dial", 2),
            ("dial", 2),
            ("revdial", 0, 2, "none", 2, "none"),
            ("revdial", 0, 2, "none", None, "none"),
            ("control", 0, ("pickup", None), 5),
            ("advance", 6000),
        ],
    ),
    "two-listeners-failover": dialer(
        [0, 5, 2, 7, 1, 4, 9],
        3,
        [
            ("revdial", 0, 1, "control", None, "good"),
            ("revdial", 1, 1, "control", None, "good"),
            ("dial", 1),
            ("dial", 1),
            ("dial", 1),
            ("close_conn", 0),
            ("revdial", 1, 1, "data", 2, "good"),
            ("control", 0, ("pickup", 1), 9),
            ("revdial", 2, 1, "none", None, "good"),
        ],
    ),
    "anonymous-takeover-and-limits": dialer(
        [1, 1, 0, 0, 0, 0, 0],
        4,
        [
            ("revdial", 0, 2, "none", None, "none"),
            ("revdial", 1, 2, "none", None, "none"),
            ("revdial", 1, 0, "control", None, "good"),
            ("revdial", 1, 0, "control", None, "bad"),
            ("revdial", 1, 1, "control", None, "none"),
            ("dial", 2),
            ("dial", 2),
            ("control", 0, "partial", 3),
            ("control", 0, "keepalive", 3),
            ("close_stream", 0),
        ],
    ),
    "timeouts-keepalives-cancel": dialer(
        [2, 5, 2, 7, 2, 0, 0],
        5,
        [
            ("revdial", 0, 0, "control", None, "none"),
            ("dial", 0),
            ("dial", 0),
            ("cancel", 1),
            ("advance", 999),
            ("advance", 2),
            ("control", 0, "garbage", 4),
            ("dial", 0),
        ],
    ),
}

# ---- listener_ops ------------------------------------------------------------------
L = [
    "connected", "connect_failed", "accepted", "rejected", "conn_ready", "keepalive",
    "garbage", "raw", "disconnected", "data_opened", "data_failed", "close", "advance",
    "timeout",
]


def listener(mark, spares, initial, mx, stable, max_attempts, seed, ops):
    e = Enc()
    e.bool(mark).u8(spares).u32(initial).u64(mx).u32(stable)
    if max_attempts is None:
        e.bool(False)
    else:
        e.bool(True).u8(max_attempts)
    e.u64(seed)
    for op in ops:
        e.u8(1)
        name = op[0]
        e.variant(L.index(name), len(L))
        if name == "rejected":
            e.u16(op[1])
        elif name == "conn_ready":
            e.bool(False)  # no token (strings are not encodable here)
        elif name == "raw":
            e.vec_u8(op[1])
        elif name in ("data_opened", "data_failed"):
            e.u8(op[1])
        elif name == "advance":
            e.u32(op[1])
    e.u8(0)
    return bytes(e.b)


LISTENER = {
    "happy-path-with-spares": listener(
        True, 2, 250, 30000, 30000, None, 1,
        [("connected",), ("accepted",), ("data_opened", 0), ("conn_ready",),
         ("data_failed", 2), ("keepalive",), ("data_failed", 1)],
    ),
    "backoff-ladder": listener(
        True, 0, 100, 2000, 10000, None, 7,
        [("connect_failed",), ("timeout",), ("advance", 300), ("timeout",),
         ("connect_failed",), ("advance", 5000), ("timeout",), ("connected",),
         ("rejected", 409), ("advance", 5000), ("timeout",), ("connected",),
         ("accepted",), ("advance", 20000), ("disconnected",)],
    ),
    "go-mode-protocol-error": listener(
        False, 0, 0, 0, 0, 3, 9,
        [("connected",), ("accepted",), ("conn_ready",), ("data_failed", 0),
         ("raw", b'{"command":"conn-ready","connPath":"t"}\n{"comm'),
         ("raw", b'and":"keep-alive"}\nnot json\n'), ("timeout",), ("connected",),
         ("close",), ("connected",)],
    ),
    "huge-backoff-cap": listener(
        True, 3, 2**32 - 1, 2**64 - 1, 1, None, 11,
        [("connect_failed",)] + [("timeout",), ("advance", 2**32 - 1), ("connect_failed",)] * 6,
    ),
}

# ---- conn_ops ----------------------------------------------------------------------
C = [
    "write", "write_run", "flush", "shutdown", "take_send", "send_end", "on_data",
    "on_end", "on_reset", "fail", "read", "read_chunk", "take_credit", "advance",
]


def conn(coalesce, max_buffer, delay_us, ops):
    e = Enc()
    e.u16(coalesce).u32(max_buffer).u16(delay_us)
    for op in ops:
        e.u8(1)
        name = op[0]
        e.variant(C.index(name), len(C))
        if name in ("write", "on_data"):
            e.vec_u8(op[1])
        elif name == "write_run":
            e.u8(op[1]).u16(op[2])
        elif name == "on_reset":
            e.u8(op[1])
        elif name in ("take_send", "read", "read_chunk", "advance"):
            e.u16(op[1])
    e.u8(0)
    return bytes(e.b)


CONN = {
    "coalesce-then-flush": conn(
        8, 16, 1000,
        [("write", b"hello"), ("take_send", 100), ("advance", 999), ("take_send", 100),
         ("advance", 1), ("take_send", 3), ("write", b"world!!!"), ("take_send", 100),
         ("flush",), ("take_send", 100)],
    ),
    "backpressure-and-half-close": conn(
        1024, 4096, 0,
        [("write_run", 120, 5000), ("write", b"x"), ("take_send", 1000), ("shutdown",),
         ("write", b"y"), ("take_send", 65535), ("send_end",), ("on_data", b"more"),
         ("read", 2), ("read_chunk", 10), ("on_end",), ("read", 10), ("take_credit",)],
    ),
    "reset-after-end-and-cancel": conn(
        16, 64, 10,
        [("on_data", b"abc"), ("on_end",), ("on_reset", 0), ("read", 8), ("read", 8),
         ("write", b"late"), ("on_reset", 8), ("read", 1), ("take_credit",)],
    ),
    "refused-and-local-failure": conn(
        1, 1, 0,
        [("write", b"ab"), ("write", b"c"), ("on_reset", 7), ("write", b"d"),
         ("on_data", b"ignored"), ("fail",), ("read", 4), ("read_chunk", 0)],
    ),
}

for target, seeds in (("dialer_ops", DIALER), ("listener_ops", LISTENER), ("conn_ops", CONN)):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    for name, data in seeds.items():
        with open(f"corpus/{target}/{name}", "wb") as f:
            f.write(data)
