"""Binary HTTP (RFC 9292) writing and reading: the RFC's example, padding, truncation, refusals."""

import random
import unittest

from sealed_client import bhttp
from sealed_client.errors import BhttpError

H = bytes.fromhex

# RFC 9292 section 5.1, the known-length encoding of "GET /hello.txt" with three header fields.
RFC9292_KNOWN_LENGTH_REQUEST = H(
    "0003474554056874747073000a2f68656c6c6f2e747874406c0a757365722d6167656e74346375726c2f372e3136"
    "2e33206c69626375726c2f372e31362e33204f70656e53534c2f302e392e376c207a6c69622f312e322e3304686f"
    "73740f7777772e6578616d706c652e636f6d0f6163636570742d6c616e677561676506656e2c206d690000"
)
RFC9292_HEADERS = (
    (b"user-agent", b"curl/7.16.3 libcurl/7.16.3 OpenSSL/0.9.7l zlib/1.2.3"),
    (b"host", b"www.example.com"),
    (b"accept-language", b"en, mi"),
)


class Varint(unittest.TestCase):
    def test_rfc9000_examples(self):
        """RFC 9000 section A.1's sample encodings (each the shortest form)."""
        for value, encoded in (
            (151288809941952652, "c2197c5eff14e88c"),
            (494878333, "9d7f3e7d"),
            (15293, "7bbd"),
            (37, "25"),
        ):
            self.assertEqual(bhttp.encode_varint(value), H(encoded))

    def test_non_minimal_encodings_are_read(self):
        self.assertEqual(bhttp.decode_response(H("0140c8")).status, 200)
        self.assertEqual(bhttp.decode_response(H("01800000c8")).status, 200)
        self.assertEqual(bhttp.decode_response(H("01c0000000000000c8")).status, 200)

    def test_out_of_range(self):
        for value in (-1, 1 << 62, True, 1.0):
            with self.assertRaises(ValueError):
                bhttp.encode_varint(value)


class Request(unittest.TestCase):
    def test_rfc9292_example_written_and_read(self):
        written = bhttp.encode_request("GET", "https", "", "/hello.txt", headers=RFC9292_HEADERS)
        self.assertEqual(written, RFC9292_KNOWN_LENGTH_REQUEST)
        read = bhttp.decode_request(RFC9292_KNOWN_LENGTH_REQUEST)
        self.assertEqual(
            (read.method, read.scheme, read.authority, read.path),
            (b"GET", b"https", b"", b"/hello.txt"),
        )
        self.assertEqual(read.headers, RFC9292_HEADERS)

    def test_the_predict_request(self):
        """What seal_and_send() seals, byte by byte (docs/SEALED.md, "The inner message")."""
        image = b"\xff\xd8\xff\xe0 jpeg"
        written = bhttp.encode_request(
            "POST", "https", "127.0.0.1:8080", "/predict-secure/?top_k=3", content=image
        )
        self.assertEqual(
            written,
            b"\x00"
            + b"\x04POST"
            + b"\x05https"
            + b"\x0e127.0.0.1:8080"
            + b"\x18/predict-secure/?top_k=3"
            + b"\x00"
            + bytes([len(image)])
            + image
            + b"\x00",
        )
        self.assertEqual(bhttp.decode_request(written).content, image)

    def test_large_content_uses_a_longer_length(self):
        image = bytes(70_000)
        written = bhttp.encode_request("POST", "https", "a", "/p", content=image)
        self.assertIn(H("80011170"), written)  # 70000 as a 4-byte varint
        self.assertEqual(bhttp.decode_request(written).content, image)

    def test_indeterminate_length_is_refused(self):
        with self.assertRaises(BhttpError):
            bhttp.decode_request(b"\x02" + RFC9292_KNOWN_LENGTH_REQUEST[1:])

    def test_uppercase_field_name_is_not_written(self):
        with self.assertRaises(ValueError):
            bhttp.encode_request("GET", "https", "a", "/", headers=[(b"Host", b"a")])


class Response(unittest.TestCase):
    body = b'{"class_ids":[285]}'

    def test_padded_response_as_the_enclave_sends_it(self):
        written = bhttp.encode_response(
            200, [(b"content-type", b"application/json")], self.body, pad_to=4096
        )
        self.assertEqual(len(written), 4096)
        read = bhttp.decode_response(written)
        self.assertEqual((read.status, read.content, read.trailers), (200, self.body, ()))
        self.assertEqual(read.header(b"content-type"), b"application/json")

    def test_padding_must_be_zeros(self):
        written = bhttp.encode_response(400, content=self.body, pad_to=64)
        with self.assertRaises(BhttpError):
            bhttp.decode_response(written[:-1] + b"\x01")

    def test_truncated_sections_are_empty(self):
        self.assertEqual(bhttp.decode_response(H("0140c8")), bhttp.Response(200))
        self.assertEqual(bhttp.decode_response(H("0140c80000")), bhttp.Response(200))
        self.assertEqual(bhttp.decode_response(H("0140c8000000000000")), bhttp.Response(200))

    def test_informational_responses_are_skipped(self):
        early = bhttp.encode_varint(103) + H("0c") + b"\x04link" + b"\x06</a.c>"
        read = bhttp.decode_response(
            b"\x01" + early + bhttp.encode_response(200, content=b"{}")[1:]
        )
        self.assertEqual((read.status, read.content), (200, b"{}"))
        self.assertEqual(read.informational, ((103, ((b"link", b"</a.c>"),)),))

    def test_refusals(self):
        good = bhttp.encode_response(200, [(b"content-type", b"application/json")], self.body)
        for bad in (
            b"",
            b"\x00" + good[1:],
            b"\x03" + good[1:],
            H("01"),
            H("0140"),
            H("0163"),
            H("014258"),
            good[:-3],
            good[:10],
            H("0140c8ff"),
            H("0140c80a0102"),
        ):
            with self.assertRaises(BhttpError, msg=bad.hex()):
                bhttp.decode_response(bad)

    def test_random_bytes_raise_only_bhttp_errors(self):
        rng = random.Random(9292)
        for _ in range(2000):
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
            for decode in (bhttp.decode_response, bhttp.decode_request):
                try:
                    decode(b"\x01" + data if decode is bhttp.decode_response else b"\x00" + data)
                except BhttpError:
                    pass


if __name__ == "__main__":
    unittest.main()
