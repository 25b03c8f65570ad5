"""The protobuf decoder: protobuf's rules where protobuf accepts input, a
clear DecodeError where it does not."""
from __future__ import annotations

import unittest

from presence import (DecodeError, DeviceSummary, State, TopicCounts, decode_diff_batch,
                      decode_topic_section, decode_user_state)


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vf(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def lf(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


class DecodeTest(unittest.TestCase):
    def test_full_batch(self) -> None:
        user = lf(1, b"alice") + vf(2, 4) + vf(3, 1_000_000) + vf(4, 77) + lf(5, vf(1, 1) +
                                                                                 vf(3, 2))
        gone = lf(1, b"bob") + vf(6, 1)
        section = lf(1, b"team") + vf(2, 1) + lf(3, user) + lf(4, vf(1, 3) + vf(4, 9)) + vf(5, 0)
        data = vf(1, 7) + vf(2, 12) + vf(3, 1) + lf(4, user) + lf(4, gone) + lf(5, section)
        b = decode_diff_batch(data)
        self.assertEqual((b.subscriber_id, b.sequence, b.snapshot), (7, 12, True))
        self.assertEqual(len(b.users), 2)
        u = b.users[0]
        self.assertEqual((u.user_id, u.state, u.last_seen_ms, u.version),
                         (b"alice", State.DND, 1_000_000, 77))
        self.assertEqual(u.devices, DeviceSummary(web=1, mobile=2))
        self.assertEqual((b.users[1].user_id, b.users[1].removed, b.users[1].state),
                         (b"bob", True, State.UNSPECIFIED))
        t = b.topics[0]
        self.assertEqual((t.topic, t.full, t.left), (b"team", True, False))
        self.assertEqual(t.counts, TopicCounts(online=3, offline=9))
        self.assertEqual(t.users[0], u)
        self.assertEqual(decode_topic_section(section), t)
        self.assertEqual(decode_user_state(user), u)

    def test_protobuf_rules(self) -> None:
        self.assertEqual(decode_diff_batch(b"").sequence, 0)
        # Concatenated encodings: last scalar wins, repeated fields append,
        # message fields merge.
        b = decode_diff_batch(vf(2, 1) + lf(4, lf(1, b"a")) + vf(2, 5) + lf(4, lf(1, b"b")))
        self.assertEqual((b.sequence, [u.user_id for u in b.users]), (5, [b"a", b"b"]))
        u = decode_user_state(lf(5, vf(1, 1) + vf(2, 1)) + lf(5, vf(2, 4)))
        self.assertEqual(u.devices, DeviceSummary(web=1, desktop=4))
        # Unknown fields of every wire type are skipped.
        unknown = (vf(99, 5) + lf(100, b"xyz") + varint(101 << 3 | 1) + b"\0" * 8 +
                   varint(102 << 3 | 5) + b"\0" * 4)
        self.assertEqual(decode_diff_batch(unknown + vf(2, 3)).sequence, 3)
        # An enum number this binding does not know stays an int; negatives too.
        self.assertEqual(decode_user_state(vf(2, 9)).state, 9)
        self.assertEqual(decode_user_state(vf(2, -1)).state, -1)
        self.assertEqual(decode_user_state(vf(3, -5)).last_seen_ms, -5)
        # bytes-like input
        self.assertEqual(decode_diff_batch(bytearray(vf(2, 3))).sequence, 3)
        self.assertEqual(decode_diff_batch(memoryview(vf(2, 3))).sequence, 3)

    def test_malformed(self) -> None:
        cases = {
            "truncated varint": b"\x10",
            "truncated key": b"\x80",
            "varint longer than 10 bytes": b"\x10" + b"\xff" * 10 + b"\x01",
            "varint past 64 bits": b"\x10" + b"\xff" * 9 + b"\x02",
            "length past the end": b"\x22\x05abc",
            "nested length past its parent": lf(4, b"\x0a\x09alice"),
            "field number 0": b"\x00\x01",
            "start group": varint(7 << 3 | 3),
            "end group": varint(7 << 3 | 4),
            "wire type 6": varint(7 << 3 | 6),
            "truncated fixed64": varint(9 << 3 | 1) + b"\0" * 7,
            "truncated fixed32": varint(9 << 3 | 5) + b"\0" * 3,
            "known field, wrong wire type": lf(2, b"\x01"),
            "nested wrong wire type": lf(4, vf(1, 3)),
            "bad devices": lf(4, lf(5, lf(1, b"x"))),
            "bad section": lf(5, lf(3, b"\xff")),
        }
        for name, data in cases.items():
            with self.subTest(name):
                with self.assertRaises(DecodeError) as cm:
                    decode_diff_batch(data)
                self.assertIsInstance(cm.exception, ValueError)
                self.assertIn("DiffBatch", str(cm.exception))
        with self.assertRaises(TypeError):
            decode_diff_batch("text")  # type: ignore[arg-type]

    def test_fuzz_never_crashes(self) -> None:
        import random
        rng = random.Random(4)
        good = (vf(1, 7) + vf(2, 12) + lf(4, lf(1, b"alice") + vf(2, 3) + lf(5, vf(1, 1))) +
                lf(5, lf(1, b"t") + lf(3, lf(1, b"x"))))
        decode_diff_batch(good)
        for _ in range(3000):
            data = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                op = rng.randint(0, 2)
                if op == 0 and data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                elif op == 1 and data:
                    del data[rng.randrange(len(data)):]
                else:
                    data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
            try:
                decode_diff_batch(bytes(data))
            except DecodeError:
                pass


if __name__ == "__main__":
    unittest.main()
