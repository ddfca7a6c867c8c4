"""Coverage-guided fuzzing (atheris) of the datagram decoder, the bridge's front door.

    make fuzz   # = .venv/bin/python tests/fuzz/fuzz_datagram.py FUZZ_DIR tests/fuzz/corpus \
    #              tests/fuzz/found -max_total_time=300  (new inputs go to FUZZ_DIR)

The seed corpus is every real MediaWiki packet in tests/data plus our own
datagrams in every format. The property checked on every input: the decoder
returns a change or a rejection (never raises, never a decoder bug), and a
change it returns survives re-encoding as an XMLRC datagram and decoding again.
A crash is written by libFuzzer as crash-<hash>; put the input in
tests/fuzz/crashes/ and `tests/fuzz/test_crashes.py` replays it forever after.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from xmlrc.wire import (
        DatagramFormat,
        RecentChange,
        Rejection,
        decode_datagram,
        encode_datagram,
    )


def check(data: bytes) -> None:
    """The property every input must satisfy (also used by the regression test)."""
    result = decode_datagram(data)
    if isinstance(result, Rejection):
        if result.detail.startswith("unexpected"):
            raise AssertionError(f"decoder bug: {result}")
        return
    if not isinstance(result, RecentChange):
        raise AssertionError(f"decoder returned {type(result)}")
    again = decode_datagram(encode_datagram(result, DatagramFormat.XMLRC))
    if not isinstance(again, RecentChange):
        raise AssertionError(f"re-encoding a decoded change failed: {again}")


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
