#!/usr/bin/env python3
"""make_corpus.py — writes the fuzz seed corpus (valid, truncated and invalid frames) to OUTDIR."""
import os
import struct
import sys


def frame(ftype, payload, flags=0):
    return struct.pack(">BBH", ftype, flags, len(payload)) + payload


def hello(mode=0, interval=30000, timeout=90000, cid=b"", version=1, reserved=0):
    return struct.pack(">BBHII", version, mode, reserved, interval, timeout) + cid


def welcome(mode=0, interval=30000, timeout=90000, conn_id=1):
    return struct.pack(">BBHIIQ", 1, mode, 0, interval, timeout, conn_id)


def close(code, reason=b""):
    return struct.pack(">H", code) + reason


def frame_seeds():
    """Streams for fuzz_frame; the fuzzer input is prefixed with its control bytes."""
    good = [
        frame(1, hello(1, 1000, 3000, b"client-42")),
        frame(1, hello(2, 0, 0, b"x" * 64)),
        frame(2, welcome(0, 30000, 90000, 0x1122334455667788)),
        frame(3, b"\x01\x02\x03\x04\x05\x06\x07\x08"),
        frame(4, b"\xff" * 8),
        frame(5, b""),
        frame(5, b"hello world"),
        frame(5, bytes(range(256)) * 4),
        frame(6, close(1)),
        frame(6, close(2, b"heartbeat timeout")),
        frame(6, close(3, "caf\u00e9 \u20ac".encode())),
        frame(3, b"\x00" * 8, flags=0x80),
        frame(1, hello(1, 1000, 3000, b"\x05alice1700000000." + b"A" * 43, reserved=1)),
    ]
    seeds = {}
    for i, f in enumerate(good):
        seeds[f"valid_{i:02d}"] = f
        # Every truncation of a few frames: the decoder must wait, not misparse.
        if i in (0, 2, 3, 8):
            for cut in range(1, len(f)):
                seeds[f"trunc_{i:02d}_{cut:03d}"] = f[:cut]
    seeds["mixed"] = b"".join(good)
    seeds["session"] = (frame(1, hello(0, 500, 1500)) + frame(3, b"A" * 8) +
                        frame(4, b"B" * 8) + frame(5, b"payload") + frame(6, close(1, b"bye")))
    bad = {
        "unknown_type": frame(7, b""),
        "type_zero": frame(0, b"\x00" * 8),
        "ping_short": frame(3, b"\x00" * 7),
        "pong_long": frame(4, b"\x00" * 9),
        "hello_short": frame(1, b"\x01" * 11),
        "hello_long": frame(1, hello(cid=b"y" * 65)),
        "hello_version": frame(1, hello(version=2)),
        "hello_mode": frame(1, hello(mode=3)),
        "hello_reserved": frame(1, hello(reserved=1)),
        "welcome_len": frame(2, welcome()[:-1]),
        "close_short": frame(6, b"\x00"),
        "close_long": frame(6, close(1, b"r" * 124)),
        "close_overlong": frame(6, close(1, b"\xc0\x80")),
        "close_surrogate": frame(6, close(1, b"\xed\xa0\x80")),
        "close_too_high": frame(6, close(1, b"\xf4\x90\x80\x80")),
        "data_too_big": struct.pack(">BBH", 5, 0, 4097),
        "data_max": struct.pack(">BBH", 5, 0, 65535),
    }
    for name, f in bad.items():
        seeds["bad_" + name] = frame(3, b"\x00" * 8) + f
    out = {}
    # Control bytes: max_frame selector 2 (4096), then schedules: whole, byte by byte, mixed.
    for name, stream in seeds.items():
        out[name] = bytes([2, 0, 0xFF]) + stream
    out["mixed_bytewise"] = bytes([2, 0, 0]) + seeds["mixed"]
    out["mixed_odd"] = bytes([2, 3, 2, 6, 30, 0xF1]) + seeds["mixed"]
    out["mixed_maxframe16"] = bytes([1, 1, 4, 0xF0]) + seeds["mixed"]
    return out


def hello_seeds():
    """Payloads for fuzz_hello; byte 0 selects 0 HELLO, 1 WELCOME, 2 CLOSE, 3 CLOSE encoder."""
    out = {
        "hello_min": b"\x00" + hello(),
        "hello_id": b"\x00" + hello(1, 1000, 5000, b"abc"),
        "hello_max": b"\x00" + hello(2, 1, 2, b"z" * 64),
        "hello_trunc": b"\x00" + hello()[:11],
        "hello_bad_version": b"\x00" + hello(version=0),
        "hello_token": b"\x00" + hello(1, 1000, 5000, b"\x05alice" + b"1700000000." + b"A" * 43,
                                       reserved=1),
        "hello_token_noid": b"\x00" + hello(reserved=1, cid=b"\x00t"),
        "hello_token_max": b"\x00" + hello(reserved=1, cid=b"\x40" + b"i" * 64 + b"t" * 255),
        "welcome": b"\x01" + welcome(1, 1000, 3000, 7),
        "welcome_trunc": b"\x01" + welcome()[:19],
        "close_code": b"\x02" + close(5),
        "close_reason": b"\x02" + close(2, b"timeout"),
        "close_utf8": b"\x02" + close(1, "\u00e9\u20ac\U0001F493".encode()),
        "close_max": b"\x02" + close(1, b"m" * 123),
        "close_bad": b"\x02" + close(1, b"\xed\xbf\xbf"),
        "close_trunc_seq": b"\x02" + close(1, b"\xe2\x82"),
        "encode_long": b"\x03" + b"a" * 122 + "\u00e9".encode() + b"tail",
        "encode_4byte": b"\x03" + b"a" * 121 + "\U0001F493".encode(),
    }
    return out


V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_seeds():
    """Inputs for fuzz_proxy: PROXY v1 lines and v2 headers, whole, cut and followed by data."""
    v4 = bytes([198, 51, 100, 9, 10, 0, 0, 1, 0x9c, 0x40, 0x1d, 0xb0])
    v6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + b"\x12\x34\x1d\xb0"
    out = {
        "v1_tcp4": b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 7600\r\n\x01\x00\x00\x0c",
        "v1_tcp6": b"PROXY TCP6 2001:db8::1 ::1 65535 7600\r\n",
        "v1_unknown": b"PROXY UNKNOWN\r\n",
        "v1_unknown_rest": b"PROXY UNKNOWN ffff::1 whatever here\r\n",
        "v1_cut": b"PROXY TCP4 192.0.2.7 10.0",
        "v2_inet": V2_SIG + b"\x21\x11\x00\x0c" + v4,
        "v2_inet6_tlv": V2_SIG + b"\x21\x21\x00\x2c" + v6 + b"\x01\x00\x02h2\x04\x00\x00",
        "v2_local": V2_SIG + b"\x20\x00\x00\x00",
        "v2_unix": V2_SIG + b"\x21\x31\x00\xd8" + bytes(216),
        "v2_data_after": V2_SIG + b"\x21\x11\x00\x0c" + v4 + b"\x03\x00\x00\x08" + bytes(8),
        "v2_cut": V2_SIG + b"\x21\x11\x00",
    }
    return out


def token_seeds():
    """Inputs for fuzz_token: byte 0 the id length, the id, the token."""
    tok = b"1700000000.kTzQQD_7T7qBJTux0j35N0bosR-ucm7i-eHwK1iYHCs"
    return {
        "known": b"\x05alice" + tok,
        "other_id": b"\x03bob" + tok,
        "no_id": b"\x00" + tok,
        "malformed": b"\x05alice" + b"17.x",
        "empty": b"\x05alice",
    }


def ws_frame(op, payload=b"", fin=True, mask=b"\x11\x22\x33\x44", rsv=0):
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv << 4 | op
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack(">BB", b0, m | n)
    elif n < 65536:
        head = struct.pack(">BBH", b0, m | 126, n)
    else:
        head = struct.pack(">BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_frame_seeds():
    """Streams for fuzz_ws_frame; byte 0: bit 0 server side (masked), bits 1-2 message limit."""
    session = (ws_frame(9, b"\0" * 8) + ws_frame(10, b"tokentok") + ws_frame(1, "h\u00e9llo".encode()) +
               ws_frame(2, bytes(range(200))) + ws_frame(1, b"frag ", fin=False) +
               ws_frame(9, b"mid") + ws_frame(0, "\u20ac".encode()[:2], fin=False) +
               ws_frame(0, "\u20ac".encode()[2:]) + ws_frame(8, struct.pack(">H", 1000) + b"bye"))
    bad = {
        "unmasked": ws_frame(1, b"x", mask=None),
        "rsv": ws_frame(1, b"x", rsv=4),
        "opcode": ws_frame(3, b"x"),
        "ctl_long": ws_frame(9, b"p" * 126),
        "ctl_frag": ws_frame(9, b"p", fin=False),
        "top_bit": struct.pack(">BBQ", 0x82, 0xFF, 1 << 63) + b"\0" * 4,
        "len64": struct.pack(">BBQ", 0x82, 0xFF, 70000) + b"\0" * 4,
        "nonminimal": struct.pack(">BBH", 0x82, 0xFE, 3) + b"\0" * 7,
        "cont": ws_frame(0, b"x"),
        "utf8": ws_frame(1, b"\xc3\x28"),
        "utf8_split": ws_frame(1, b"\xe2\x82", fin=False) + ws_frame(0, b"\x28"),
        "close_code": ws_frame(8, struct.pack(">H", 1005)),
        "big": ws_frame(2, b"b" * 5000),
    }
    out = {"session_whole": bytes([5, 0, 0xFF]) + session,
           "session_bytewise": bytes([5, 0, 0]) + session,
           "session_odd": bytes([5, 3, 2, 6, 30, 0xF1]) + session,
           "big_split": bytes([7, 1, 0xF0, 3]) + ws_frame(2, bytes(range(256)) * 100)}
    client = session.replace(b"\x11\x22\x33\x44", b"")  # not exact, but a start for the fuzzer
    out["client_side"] = bytes([4, 0, 0xFF]) + ws_frame(9, b"12345678", mask=None) + \
        ws_frame(1, b"server text", mask=None) + ws_frame(8, struct.pack(">H", 4002), mask=None)
    out["client_mix"] = bytes([4, 1, 1, 0xF0]) + client
    for name, f in bad.items():
        out["bad_" + name] = bytes([5, 1, 0xFF, 0]) + ws_frame(9, b"x") + f
    return out


def ws_http_seeds():
    """Request heads for fuzz_ws_http; byte 0: bit 0 --ws-path /hb, bit 1 --ws-origin."""
    def req(path="/", extra=(), key="dGhlIHNhbXBsZSBub25jZQ==", version="13"):
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:7600", "Upgrade: websocket",
                 "Connection: keep-alive, Upgrade", "Sec-WebSocket-Key: " + key,
                 "Sec-WebSocket-Version: " + version] + list(extra)
        return ("\r\n".join(lines) + "\r\n\r\n").encode()
    heads = {
        "plain": req(),
        "query": req("/hb?interval=2s&timeout=7500ms&mode=client&id=ab%20c+d&token=x"),
        "origin": req("/hb", ["Origin: https://a.example"]),
        "origin_bad": req("/hb", ["Origin: https://evil.example"]),
        "version": req(version="8"),
        "key": req(key="short"),
        "lf_only": req().replace(b"\r\n", b"\n"),
        "deflate": req(extra=["Sec-WebSocket-Extensions: permessage-deflate"]),
        "early_frame": req() + ws_frame(9, b"early"),
        "big": req(extra=["X-Pad: " + "p" * 8300]),
        "garbage": b"GARBAGE\r\n\r\n",
        "reply": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                  b"Ringbeat-Interval-Ms: 1000\r\nRingbeat-Mode: client\r\n\r\n"),
    }
    out = {}
    for name, h in heads.items():
        out[name] = bytes([3, 0, 0xFF]) + h
        out[name + "_pieces"] = bytes([1, 2, 5, 17, 0xF0]) + h
    return out


def client_seeds():
    """Inputs for fuzz_client; byte 0 selects 0 session (then mode/ping flags, chunk size),
    1 smart heartbeat (4 parameter bytes, a 16-byte record, then operations), 2 URL."""
    session = (frame(2, welcome(1, 1000, 2500, 9)) + frame(4, struct.pack(">Q", 1)) +
               frame(3, b"\x07" * 8) + frame(5, b"data") + frame(2, welcome(1, 2000, 4500, 9)) +
               frame(6, close(3)))
    rec = struct.pack(">BBBBIII", 1, 1, 2, 1, 5000, 4000, 777)
    out = {
        "session_client": b"\x00\x00\x10" + session,
        "session_server_bytewise": b"\x00\x01\x00" + session,
        "session_ping_out": b"\x00\x02\x03" + session,
        "session_tune_refused": b"\x00\x02\x0f" + frame(2, welcome(1, 1000, 2500)) +
                                frame(6, close(3, b"unknown type")),
        "session_bad": b"\x00\x00\x10" + frame(1, hello()) + frame(7, b"\x00" * 8),
        "session_big": b"\x00\x00\x05" + frame(2, welcome()) + struct.pack(">BBH", 5, 0, 5000),
        "session_split": b"\x00\x00\x02" + frame(2, welcome()) + frame(5, b"s" * 300),
        "smart_fresh": b"\x01\x00\x00\x10\x10" + b"\x00" * 16 + bytes(range(96, 256)),
        "smart_record": b"\x01\x05\x07\x09\x02" + rec + bytes([0x61, 0x60, 0x00, 0x61] * 20),
        "smart_fg": b"\x01\x01\x02\x03\x04" + rec + bytes([0x21, 0x61, 0x20, 0x40, 0x5f] * 8),
        "url_plain": b"\x02127.0.0.1:7600",
        "url_v6": b"\x02tcp://[::1]:65535",
        "url_ws": b"\x02ws://h:80",
        "url_bad": b"\x02[::1:80",
    }
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py OUTDIR")
    for sub, seeds in (("frame", frame_seeds()), ("hello", hello_seeds()),
                       ("proxy", proxy_seeds()), ("token", token_seeds()),
                       ("ws_frame", ws_frame_seeds()), ("ws_http", ws_http_seeds()),
                       ("client", client_seeds())):
        d = os.path.join(sys.argv[1], sub)
        os.makedirs(d, exist_ok=True)
        for name, blob in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(blob)


if __name__ == "__main__":
    main()
