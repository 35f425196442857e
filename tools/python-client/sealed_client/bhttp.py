"""Known-length Binary HTTP messages (RFC 9292), the inner messages of a sealed exchange.

Only what docs/SEALED.md uses: known-length requests (framing indicator 0) and responses
(framing indicator 1), written and read; indeterminate-length messages are refused. Readers
accept the RFC's truncation (trailing empty sections left out, section 3.8) and trailing zero
padding (the enclave pads every answer to a multiple of 4096 bytes), and refuse anything else
after the message. Every length is checked against the bytes actually present, so a hostile
length cannot make the reader allocate or read past the buffer.
"""

from dataclasses import dataclass, field

from .errors import BhttpError

REQUEST_FRAMING = 0
RESPONSE_FRAMING = 1
_VARINT_MAX = (1 << 62) - 1


@dataclass(frozen=True)
class Request:
    """A decoded request: control data, fields as (name, value) byte pairs, content."""

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: tuple = ()
    content: bytes = b""
    trailers: tuple = ()


@dataclass(frozen=True)
class Response:
    """A decoded final response; informational is a tuple of (status, fields) before it."""

    status: int
    headers: tuple = ()
    content: bytes = b""
    trailers: tuple = ()
    informational: tuple = field(default=())

    def header(self, name):
        """The first value of header `name` (bytes, lowercase), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


# --- writing -------------------------------------------------------------------------------------


def encode_varint(value):
    """A QUIC variable-length integer (RFC 9000 section 16), in its shortest form."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _VARINT_MAX:
        raise ValueError(f"not a varint value: {value!r}")
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 1 << 30:
        return (value | 0x8000_0000).to_bytes(4, "big")
    return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")


def _bytes(value):
    return value.encode("ascii") if isinstance(value, str) else bytes(value)


def _prefixed(value):
    value = _bytes(value)
    return encode_varint(len(value)) + value


def _field_section(fields):
    body = b"".join(_prefixed(name) + _prefixed(value) for name, value in fields)
    return _prefixed(body)


def encode_request(method, scheme, authority, path, headers=(), content=b""):
    """A known-length request: framing 0, control data, header section, content, no trailers."""
    for name, _ in headers:
        if _bytes(name) != _bytes(name).lower():
            raise ValueError(f"field names are lowercase in Binary HTTP: {name!r}")
    return (
        encode_varint(REQUEST_FRAMING)
        + b"".join(_prefixed(part) for part in (method, scheme, authority, path))
        + _field_section(headers)
        + _prefixed(content)
        + _field_section(())
    )


def encode_response(status, headers=(), content=b"", pad_to=0):
    """A known-length final response, zero-padded to a multiple of pad_to bytes if pad_to > 0."""
    if not 200 <= status <= 599:
        raise ValueError(f"not a final status: {status}")
    message = (
        encode_varint(RESPONSE_FRAMING)
        + encode_varint(status)
        + _field_section(headers)
        + _prefixed(content)
        + _field_section(())
    )
    if pad_to > 0:
        message += bytes(-len(message) % pad_to)
    return message


# --- reading -------------------------------------------------------------------------------------


class _Reader:
    """A cursor over the message that refuses to read past its end."""

    def __init__(self, data):
        self.data = memoryview(bytes(data))
        self.pos = 0

    def at_end(self):
        return self.pos >= len(self.data)

    def varint(self, what):
        if self.at_end():
            raise BhttpError(f"truncated before {what}")
        first = self.data[self.pos]
        size = 1 << (first >> 6)
        if self.pos + size > len(self.data):
            raise BhttpError(f"truncated inside {what} (a {size}-byte integer)")
        value = int.from_bytes(self.data[self.pos : self.pos + size], "big") & (
            (1 << (8 * size - 2)) - 1
        )
        self.pos += size
        return value

    def take(self, length, what):
        if length > len(self.data) - self.pos:
            raise BhttpError(f"{what} claims {length} bytes, {len(self.data) - self.pos} are left")
        chunk = bytes(self.data[self.pos : self.pos + length])
        self.pos += length
        return chunk

    def prefixed(self, what):
        return self.take(self.varint(f"the length of {what}"), what)

    def field_section(self, what):
        reader = _Reader(self.prefixed(what))
        fields = []
        while not reader.at_end():
            name = reader.prefixed(f"a field name in {what}")
            value = reader.prefixed(f"a field value in {what}")
            fields.append((name, value))
        return tuple(fields)

    def rest_is_padding(self):
        rest = self.data[self.pos :]
        if any(rest):
            raise BhttpError(f"{len(rest)} bytes after the message are not zero padding")


def _sections(reader):
    """Header section, content and trailer section, each left out if the message ends (3.8)."""
    headers = () if reader.at_end() else reader.field_section("the header section")
    content = b"" if reader.at_end() else reader.prefixed("the content")
    trailers = () if reader.at_end() else reader.field_section("the trailer section")
    reader.rest_is_padding()
    return headers, content, trailers


def decode_request(data):
    """Read a known-length request (framing 0); anything else raises BhttpError."""
    reader = _Reader(data)
    framing = reader.varint("the framing indicator")
    if framing != REQUEST_FRAMING:
        raise BhttpError(
            f"framing indicator {framing}, expected {REQUEST_FRAMING} (known-length request)"
        )
    control = [
        reader.prefixed(what) for what in ("the method", "the scheme", "the authority", "the path")
    ]
    return Request(*control, *_sections(reader))


def decode_response(data):
    """Read a known-length response (framing 1): informational responses, then the final one."""
    reader = _Reader(data)
    framing = reader.varint("the framing indicator")
    if framing != RESPONSE_FRAMING:
        raise BhttpError(
            f"framing indicator {framing}, expected {RESPONSE_FRAMING} (known-length response)"
        )
    informational = []
    while True:
        status = reader.varint("the status code")
        if 100 <= status <= 199:
            informational.append((status, reader.field_section("an informational response")))
        elif 200 <= status <= 599:
            return Response(status, *_sections(reader), informational=tuple(informational))
        else:
            raise BhttpError(f"status code {status} is not an HTTP status")
