"""Write the fuzzer's seed corpus (tests/fuzz/corpus/) from the real packets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from xmlrc.wire import DatagramFormat, RecentChange, decode_datagram, encode_datagram

HERE = Path(__file__).parent
DATA = HERE.parent / "data" / "feed-packets.jsonl"


def seeds() -> list[bytes]:
    out = []
    for line in DATA.read_text().splitlines():
        packet = json.loads(line)["data"].encode()
        out.append(packet)
        change = decode_datagram(packet)
        if isinstance(change, RecentChange):
            out.extend(encode_datagram(change, fmt) for fmt in DatagramFormat)
            out.append(encode_datagram(change, DatagramFormat.MW_JSON, prefix="rc"))
    return out


def main() -> None:
    corpus = HERE / "corpus"
    corpus.mkdir(exist_ok=True)
    for seed in seeds():
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)  # noqa: S324 - a file name
    print(f"{len(list(corpus.iterdir()))} seeds in {corpus}")


if __name__ == "__main__":
    main()
