"""Why a datagram or payload was refused: typed reasons, never stray exceptions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RejectReason(StrEnum):
    """The reasons a decoder refuses input; also the label of the rejection counters."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    BAD_ENCODING = "bad_encoding"
    UNKNOWN_FORMAT = "unknown_format"
    BAD_XML = "bad_xml"
    FORBIDDEN_XML = "forbidden_xml"  # DTDs, entity declarations
    TOO_DEEP = "too_deep"
    TOO_MANY_ATTRIBUTES = "too_many_attributes"
    BAD_JSON = "bad_json"
    MISSING_FIELD = "missing_field"
    BAD_FIELD = "bad_field"
    BAD_WIKI = "bad_wiki"
    # At the bridge's edge, before decoding (udp2xmpp):
    NOT_ALLOWED = "not_allowed"  # source address outside udp.allow
    RATE_LIMITED = "rate_limited"  # source over its budget, or in the penalty box
    UNSIGNED = "unsigned"  # no signature where one is required
    BAD_SIGNATURE = "bad_signature"  # malformed header, unknown version, wrong MAC
    STALE_SIGNATURE = "stale_signature"  # signed too long ago (or ahead): outside the window
    REPLAYED = "replayed"  # the same signature seen again within the window


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused input: the reason (a counter label) and a short human detail."""

    reason: RejectReason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


class DecodeError(ValueError):
    """Raised inside the codecs; the datagram decoder turns it into a `Rejection`."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def rejection(self) -> Rejection:
        return Rejection(self.reason, self.detail)
