"""The fuzzer's corpus replayed: the seeds (corpus/), the inputs it found that
reached new code (found/), and every input it ever crashed on (crashes/, none
so far: 2 million runs in two sessions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmlrc.wire import (
    DatagramFormat,
    RecentChange,
    Rejection,
    decode_datagram,
    encode_datagram,
)

HERE = Path(__file__).parent
CRASHES = sorted(HERE.glob("corpus/*")) + sorted(HERE.glob("found/*"))
CRASHES += sorted(HERE.glob("crashes/*"))


def test_the_corpus_is_there() -> None:
    assert len(CRASHES) > 300  # 113 seeds and what fuzzing found


@pytest.mark.parametrize("path", CRASHES, ids=[p.name for p in CRASHES])
def test_fuzzer_finding_is_handled(path: Path) -> None:
    result = decode_datagram(path.read_bytes())
    assert isinstance(result, RecentChange | Rejection)
    if isinstance(result, Rejection):
        assert not result.detail.startswith("unexpected"), result
    else:
        again = decode_datagram(encode_datagram(result, DatagramFormat.XMLRC))
        assert isinstance(again, RecentChange), again
