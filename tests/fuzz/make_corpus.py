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
                       ("client", client_seeds())):
        d = os.path.join(sys.argv[1], sub)
        os.makedirs(d, exist_ok=True)
        for name, blob in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(blob)


if __name__ == "__main__":
    main()
