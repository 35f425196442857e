"""A stand-in for the parent and the enclave behind it, on 127.0.0.1, for the client tests.

It serves GET /attestation (a document from a test Pki, bound to the nonce and to its current
OHTTP key) and POST /.well-known/ohttp-gateway (opens the request with the gateway's private
key, as RFC 9458 section 4.3 says, answers a padded Binary HTTP response sealed per section
4.4). `behaviour` makes it misbehave the ways a parent or a rotated key can.
"""

import hashlib
import hmac
import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import pki
from sealed_client import bhttp, ohttp

PROBLEM = {
    "type": "https://iana.org/assignments/http-problem-types#ohttp-key",
    "title": "key identifier unknown",
}


class FakeParent:
    def __init__(self, pcrs=pki.PCRS):
        self.pki = pki.Pki("fake", now=time.time())
        self.pcrs = pcrs
        self.keys = {}  # key_id -> X25519PrivateKey
        self.key_id = 41
        self.rotate(keep_old=False)
        self.behaviour = set()
        self.attestations = 0
        self.requests = []  # the inner requests opened, decoded
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def rotate(self, keep_old=True):
        """A new current key; the old ones are forgotten unless keep_old (the grace period)."""
        if not keep_old:
            self.keys.clear()
        self.key_id = (self.key_id + 1) % 256
        self.keys[self.key_id] = X25519PrivateKey.generate()

    def key_config(self, key_id=None):
        key_id = self.key_id if key_id is None else key_id
        public = self.keys[key_id].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return ohttp.KeyConfig(key_id, public).encode()

    # --- the two routes --------------------------------------------------------------------------

    def attest(self, nonce):
        self.attestations += 1
        if "replay" in self.behaviour:
            nonce = bytes(32)
        document = pki.document(
            self.pki,
            nonce,
            pcrs=self.pcrs,
            public_key=self.key_config(),
            timestamp_ms=int(time.time() * 1000),
        )
        if "rotate_after_attest" in self.behaviour:
            self.behaviour.discard("rotate_after_attest")
            self.rotate(keep_old=False)
        return document

    def gateway(self, body):
        """(status, content type, body) for one message/ohttp-req."""
        private = self.keys.get(body[0]) if body else None
        if private is None or "reject_all_keys" in self.behaviour:
            return 400, "application/problem+json", json.dumps(PROBLEM).encode()
        header, enc, sealed = body[:7], body[7:39], body[39:]
        suite = ohttp._SUITE
        try:
            context = suite.create_recipient_context(
                enc,
                suite.kem.deserialize_private_key(private.private_bytes_raw()),
                info=ohttp.REQUEST_LABEL + b"\x00" + header,
            )
            inner = bhttp.decode_request(context.open(sealed))
        except Exception:
            return (
                400,
                "application/json",
                b'{"error":"the sealed request cannot be opened","code":"sealed_request_invalid"}',
            )
        self.requests.append(inner)
        status, answer = self.answer(inner)
        message = bhttp.encode_response(
            status,
            [(b"content-type", b"application/json")],
            json.dumps(answer).encode(),
            pad_to=4096,
        )
        if "not_json" in self.behaviour:
            message = bhttp.encode_response(200, content=b"<html>", pad_to=4096)
        response_nonce = os.urandom(ohttp.RESPONSE_NONCE_LEN)
        secret = context.export(ohttp.RESPONSE_LABEL, ohttp.RESPONSE_NONCE_LEN)
        prk = hmac.new(enc + response_nonce, secret, hashlib.sha256).digest()
        key = HKDFExpand(hashes.SHA256(), ohttp.NK, b"key").derive(prk)
        nonce = HKDFExpand(hashes.SHA256(), ohttp.NN, b"nonce").derive(prk)
        reply = response_nonce + AESGCM(key).encrypt(nonce, message, b"")
        if "tamper" in self.behaviour:
            reply = reply[:-1] + bytes([reply[-1] ^ 1])
        return 200, "message/ohttp-res", reply

    @staticmethod
    def answer(inner):
        path, _, query = inner.path.partition(b"?")
        if inner.method != b"POST" or path != b"/predict-secure/":
            return 404, {"error": "no such route", "code": "not_found"}
        if not inner.content.startswith(b"\xff\xd8"):
            return 400, {"error": "not an image", "code": "bad_image"}
        top_k = int(urllib.parse.parse_qs(query.decode()).get("top_k", ["5"])[0])
        return 200, {
            "class_ids": [285],
            "predictions": [[{"class_id": 285, "label": "Egyptian cat", "score": 0.37}] * top_k],
            "backend": "secure",
        }


def _handler(parent):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, status, content_type, body, extra=()):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if "unavailable" in parent.behaviour:
                return self.send(
                    503,
                    "application/json",
                    b'{"error":"no attestation","code":"attestation_unavailable"}',
                )
            if "redirect" in parent.behaviour:
                return self.send(
                    302, "text/plain", b"", [("Location", "http://127.0.0.1:9/elsewhere")]
                )
            if "huge" in parent.behaviour:
                return self.send(200, "application/cbor", bytes(20000))
            nonce = bytes.fromhex(urllib.parse.parse_qs(url.query)["nonce"][0])
            self.send(200, "application/cbor", parent.attest(nonce))

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if (
                self.path != "/.well-known/ohttp-gateway"
                or self.headers["Content-Type"] != "message/ohttp-req"
            ):
                return self.send(
                    404, "application/json", b'{"error":"no such route","code":"not_found"}'
                )
            if "busy" in parent.behaviour:
                return self.send(
                    503, "application/json", b'{"error":"enclave busy","code":"backend_busy"}'
                )
            self.send(*parent.gateway(body))

    return Handler
