"""fetch_and_verify(), seal_and_send() and the CLI over HTTP, against fake_parent.FakeParent."""

import contextlib
import io
import json
import os
import tempfile
import unittest
import warnings

import fake_parent
import pki

from sealed_client import Policy, fetch_and_verify, seal_and_send
from sealed_client.__main__ import main
from sealed_client.attestation import DevRootWarning
from sealed_client.errors import (
    KeyRejected,
    NonceMismatch,
    NothingPinned,
    PcrMismatch,
    SealedResponseError,
    TransportError,
)

IMAGE = b"\xff\xd8\xff\xe0 a JPEG, as far as the fake can tell"


class Client(unittest.TestCase):
    def setUp(self):
        self.parent = fake_parent.FakeParent()
        self.addCleanup(self.parent.close)
        self.policy = Policy(
            pcrs={0: pki.PCRS[0], 2: pki.PCRS[2]}, dev_root_pem=self.parent.pki.root_pem
        )
        self.enterContext(warnings.catch_warnings())
        warnings.simplefilter("ignore", DevRootWarning)

    def attest(self):
        return fetch_and_verify(self.parent.url, self.policy)

    def test_round_trip(self):
        key = self.attest()
        self.assertEqual(key.key_id, self.parent.key_id)
        status, answer = seal_and_send(self.parent.url + "/", key, IMAGE, top_k=3)
        self.assertEqual(status, 200)
        self.assertEqual(answer["class_ids"], [285])
        self.assertEqual(len(answer["predictions"][0]), 3)
        inner = self.parent.requests[-1]
        self.assertEqual(
            (inner.method, inner.scheme, inner.authority, inner.path, inner.content),
            (b"POST", b"https", self.parent.url[7:].encode(), b"/predict-secure/?top_k=3", IMAGE),
        )

    def test_inner_error_is_an_answer_not_an_exception(self):
        status, answer = seal_and_send(self.parent.url, self.attest(), b"GIF89a")
        self.assertEqual((status, answer["code"]), (400, "bad_image"))

    def test_rotated_key_is_attested_again_and_the_request_retried_once(self):
        self.parent.behaviour.add("rotate_after_attest")
        key = self.attest()
        status, _ = seal_and_send(self.parent.url, key, IMAGE)
        self.assertEqual(status, 200)
        self.assertEqual(self.parent.attestations, 2)
        self.assertEqual(len(self.parent.requests), 1)

    def test_key_rejected_twice_is_an_error(self):
        key = self.attest()
        self.parent.behaviour.add("reject_all_keys")
        with self.assertRaises(KeyRejected):
            seal_and_send(self.parent.url, key, IMAGE)
        self.assertEqual(self.parent.attestations, 2)

    def test_replayed_document_is_refused(self):
        self.parent.behaviour.add("replay")
        with self.assertRaises(NonceMismatch):
            self.attest()

    def test_other_enclave_is_refused(self):
        self.policy = Policy(pcrs={0: pki.PCRS[1]}, dev_root_pem=self.parent.pki.root_pem)
        with self.assertRaises(PcrMismatch):
            self.attest()

    def test_nothing_pinned_refuses_before_any_request(self):
        with self.assertRaises(NothingPinned):
            fetch_and_verify(self.parent.url, Policy())
        self.assertEqual(self.parent.attestations, 0)

    def test_outer_errors(self):
        for behaviour, code in (
            ("unavailable", "attestation_unavailable"),
            ("redirect", None),
            ("huge", None),
        ):
            self.parent.behaviour = {behaviour}
            with self.assertRaises(TransportError) as caught:
                self.attest()
            self.assertEqual(caught.exception.code, code, behaviour)
        self.parent.behaviour = set()
        key = self.attest()
        self.parent.behaviour = {"busy"}
        with self.assertRaises(TransportError) as caught:
            seal_and_send(self.parent.url, key, IMAGE)
        self.assertEqual((caught.exception.status, caught.exception.code), (503, "backend_busy"))

    def test_sealed_request_invalid(self):
        key = self.attest()
        forged = type(key)(**{**key.__dict__, "public_key": bytes(31) + b"\x09"})
        with self.assertRaises(TransportError) as caught:
            seal_and_send(self.parent.url, forged, IMAGE)
        self.assertEqual(caught.exception.code, "sealed_request_invalid")

    def test_tampered_or_non_json_answer(self):
        key = self.attest()
        for behaviour in ("tamper", "not_json"):
            self.parent.behaviour = {behaviour}
            with self.assertRaises(SealedResponseError, msg=behaviour):
                seal_and_send(self.parent.url, key, IMAGE)

    def test_nobody_listening(self):
        url = self.parent.url
        self.parent.close()
        with self.assertRaises(TransportError):
            fetch_and_verify(url, self.policy, timeout=5)

    def test_bad_url(self):
        for url in ("ftp://host", "127.0.0.1:8080", "http://host/?q=1"):
            with self.assertRaises(ValueError):
                fetch_and_verify(url, self.policy)


class Cli(unittest.TestCase):
    def setUp(self):
        self.parent = fake_parent.FakeParent()
        self.addCleanup(self.parent.close)
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.root = self.file("root.pem", self.parent.pki.root_pem)
        measurements = {
            "Measurements": {
                "HashAlgorithm": "Sha384 { ... }",
                **{f"PCR{i}": pki.PCRS[i].hex() for i in (0, 1, 2)},
            }
        }
        self.measurements = self.file("measurements.json", json.dumps(measurements).encode())
        self.image = self.file("cat.jpg", IMAGE)

    def file(self, name, content):
        path = os.path.join(self.dir.name, name)
        with open(path, "wb") as f:
            f.write(content)
        return path

    def run_cli(self, *args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--url", self.parent.url, *args])
        return code, out.getvalue(), err.getvalue()

    def test_prints_the_answer_and_warns_about_the_dev_root(self):
        code, out, err = self.run_cli(
            "--dev-root", self.root, "--measurements", self.measurements, "--top-k", "2", self.image
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["class_ids"], [285])
        self.assertIn("DEVELOPMENT root", err)

    def test_inner_error_exits_4(self):
        bad = self.file("x.gif", b"GIF89a")
        code, out, _ = self.run_cli(
            "--dev-root", self.root, "--measurements", self.measurements, bad
        )
        self.assertEqual((code, json.loads(out)["code"]), (4, "bad_image"))

    def test_refusals_exit_1(self):
        for args in (
            (),
            ("--measurements", self.measurements),
            ("--dev-root", self.root, "--pcr", "0=" + "00" * 48),
        ):
            code, out, err = self.run_cli(*args, self.image)
            self.assertEqual((code, out), (1, ""), err)
            self.assertIn("attestation refused", err)

    def test_bad_arguments_exit_2(self):
        self.assertEqual(self.run_cli("--pcr", "0=zz", self.image)[0], 2)
        self.assertEqual(self.run_cli("--no-pcr-check", "/nonexistent.jpg")[0], 2)


if __name__ == "__main__":
    unittest.main()
