"""Error classes shared by the source parsers.

The ingest endpoint maps them to problem responses: ``MalformedError`` is a 400 (the bytes
cannot be read), ``ShapeError`` a 422 (readable, but not an event we can identify).
"""


class MalformedError(ValueError):
    """The body cannot be decoded or parsed at all (HTTP 400)."""


class ShapeError(ValueError):
    """The body parses but lacks, or mistypes, a field that identifies the event (HTTP 422)."""
