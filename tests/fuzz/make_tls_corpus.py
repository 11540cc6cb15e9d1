#!/usr/bin/env python3
"""make_tls_corpus.py — seed inputs for fuzz_tls_record (the op language is in its header comment)."""
import os
import sys


def sealed(inner, op=0):
    """op 0 (or 3 = sealed then one byte flipped) with a 1-byte length."""
    assert len(inner) < 256
    return bytes([op, len(inner)]) + inner


def raw(b):
    return bytes([1, len(b)]) + b


APP, HS, ALERT = 0x17, 0x16, 0x15
seeds = {
    "data": sealed(b"heartbeat-12" + bytes([APP])) + sealed(bytes([APP])),
    "padding": sealed(b"pad" + bytes([APP]) + bytes(40)),
    "keyupdate": sealed(b"a" + bytes([APP])) + bytes([2]) + sealed(b"b" + bytes([APP])),
    "keyupdate_requested": bytes([6]) + sealed(b"c" + bytes([APP])),
    "keyupdate_split": sealed(bytes([24, 0, HS])) + sealed(bytes([0, 1, 1, HS])) +
                       sealed(b"d" + bytes([APP])),
    "close": sealed(b"e" + bytes([APP])) + sealed(bytes([1, 0, ALERT])),
    "user_canceled": sealed(bytes([1, 90, ALERT])) + sealed(bytes([1, 0, ALERT])),
    "fatal": sealed(bytes([2, 40, ALERT])),
    "bad_mac": sealed(b"f" + bytes([APP]), op=3) + bytes([7]),
    "zeros": sealed(bytes(20)),
    "ccs": sealed(bytes([1, 20])),
    "oversize_header": raw(bytes([23, 3, 3, 0x41, 0x01])),
    "wrong_type": raw(bytes([22, 3, 3, 0, 4, 1, 0, 0, 0])),
}
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for suite in range(3):
    for name, body in seeds.items():
        with open(os.path.join(out, f"{name}-{suite}"), "wb") as f:
            f.write(bytes([suite]) + body)
