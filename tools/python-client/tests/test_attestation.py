"""Every refusal of docs/SEALED.md "What a client checks", on documents made in the test (pki.py).

Each case starts from a document that passes and breaks one property, then checks that exactly
that check's exception comes out. The check time is pinned (pki.NOW).
"""

import json
import os
import random
import tempfile
import unittest
import warnings
from unittest import mock

import cbor2
import pki

from sealed_client import attestation
from sealed_client.attestation import Policy, load_measurements, parse_pcr_arg, verify_document
from sealed_client.errors import (
    BadKeyConfig,
    BadSignature,
    BadUserData,
    BrokenChain,
    CertificateNotValid,
    DebugEnclave,
    FutureDocument,
    MalformedDocument,
    MeasurementsError,
    NonceMismatch,
    NothingPinned,
    PcrMismatch,
    StaleDocument,
    UnsupportedAlgorithm,
    UntrustedRoot,
    VerificationError,
)

NONCE = bytes(range(32))
PKI = pki.Pki()  # made once: P-384 keys are cheap, but a shared one keeps the cases short


def policy(**kw):
    base = dict(
        pcrs={0: pki.PCRS[0], 1: pki.PCRS[1], 2: pki.PCRS[2]},
        dev_root_pem=PKI.root_pem,
        now=pki.NOW,
    )
    base.update(kw)
    return Policy(**base)


def verify(document, nonce=NONCE, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", attestation.DevRootWarning)
        return verify_document(document, nonce, policy(**kw))


class Accepted(unittest.TestCase):
    def test_good_document_on_the_dev_root_warns_and_returns_the_key(self):
        with self.assertWarns(attestation.DevRootWarning):
            key = verify_document(pki.document(PKI, NONCE), NONCE, policy())
        self.assertEqual(key.root, "dev")
        self.assertEqual(key.key_id, 7)
        self.assertEqual(key.public_key, bytes(range(32)))
        self.assertEqual(key.key_config, pki.key_config())
        self.assertEqual(key.model_sha256, "ab" * 32)
        self.assertFalse(key.debug)
        self.assertEqual(key.pcrs[2], pki.PCRS[2])

    def test_pinned_aws_root_is_accepted_without_a_warning(self):
        with mock.patch.object(attestation, "AWS_NITRO_ROOT_SHA256", PKI.root_sha256):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                key = verify_document(pki.document(PKI, NONCE), NONCE, policy(dev_root_pem=None))
        self.assertEqual(key.root, "aws")

    def test_tagged_cose_sign1_is_accepted(self):
        self.assertEqual(verify(pki.document(PKI, NONCE, tag=True)).key_id, 7)

    def test_zero_pcr0_is_accepted_with_allow_debug(self):
        pcrs = {**pki.PCRS, 0: bytes(48)}
        key = verify(pki.document(PKI, NONCE, pcrs=pcrs), allow_debug=True, pcrs={1: pki.PCRS[1]})
        self.assertTrue(key.debug)

    def test_nothing_pinned_is_accepted_with_no_pcr_check(self):
        self.assertEqual(verify(pki.document(PKI, NONCE), pcrs={}, no_pcr_check=True).key_id, 7)

    def test_leeway_covers_a_leaf_valid_from_30_s_after_the_check_time(self):
        early = pki.Pki("early", leaf_window=(30, 3 * pki.HOUR))
        verify(pki.document(early, NONCE), dev_root_pem=early.root_pem)


class Refused(unittest.TestCase):
    def refuses(self, error, document, nonce=NONCE, **kw):
        with self.assertRaises(error) as caught:
            verify(document, nonce, **kw)
        self.assertIs(type(caught.exception), error, caught.exception)
        return str(caught.exception)

    # 1. structure
    def test_not_cbor(self):
        self.refuses(MalformedDocument, b"\xff\x00garbage")

    def test_empty_and_truncated(self):
        self.refuses(MalformedDocument, b"")
        self.refuses(MalformedDocument, pki.document(PKI, NONCE)[:-10])

    def test_trailing_bytes(self):
        self.refuses(MalformedDocument, pki.document(PKI, NONCE) + b"\x00")

    def test_other_tag(self):
        doc = cbor2.dumps(cbor2.CBORTag(98, cbor2.loads(pki.document(PKI, NONCE))))
        self.assertIn("tag 98", self.refuses(MalformedDocument, doc))

    def test_not_an_array_of_four(self):
        self.refuses(MalformedDocument, cbor2.dumps(cbor2.loads(pki.document(PKI, NONCE))[:3]))
        self.refuses(MalformedDocument, cbor2.dumps({"a": 1}))

    def test_oversized(self):
        self.refuses(
            MalformedDocument, pki.document(PKI, NONCE, user_data=pki.USER_DATA + b" " * 20000)
        )

    def test_deeply_nested(self):
        self.refuses(MalformedDocument, b"\x81" * 100_000 + b"\x00")

    def test_missing_and_mistyped_fields(self):
        for name in (
            "module_id",
            "digest",
            "timestamp",
            "pcrs",
            "certificate",
            "cabundle",
            "public_key",
            "user_data",
            "nonce",
        ):
            fields = pki.payload_fields(PKI, NONCE)
            del fields[name]
            self.assertIn(
                name, self.refuses(MalformedDocument, pki.document(PKI, NONCE, fields=fields))
            )
            fields = pki.payload_fields(PKI, NONCE)
            fields[name] = True if name != "digest" else 384
            self.refuses(MalformedDocument, pki.document(PKI, NONCE, fields=fields))

    def test_digest_other_than_sha384(self):
        fields = dict(pki.payload_fields(PKI, NONCE), digest="SHA256")
        self.refuses(MalformedDocument, pki.document(PKI, NONCE, fields=fields))

    def test_bad_pcr_table(self):
        for pcrs in (
            {1: pki.PCRS[1]},
            {0: b"short"},
            {32: bytes(48), 0: pki.PCRS[0]},
            {True: bytes(48)},
        ):
            self.refuses(MalformedDocument, pki.document(PKI, NONCE, pcrs=pcrs))

    def test_certificate_not_der(self):
        fields = dict(pki.payload_fields(PKI, NONCE), certificate=b"not a certificate")
        self.refuses(MalformedDocument, pki.document(PKI, NONCE, fields=fields))

    def test_other_algorithm(self):
        self.assertIn("-7", self.refuses(UnsupportedAlgorithm, pki.document(PKI, NONCE, alg=-7)))
        self.refuses(UnsupportedAlgorithm, pki.document(PKI, NONCE, protected=cbor2.dumps({})))
        self.refuses(
            UnsupportedAlgorithm, pki.document(PKI, NONCE, protected=cbor2.dumps({True: -35}))
        )

    def test_critical_header(self):
        self.refuses(
            UnsupportedAlgorithm, pki.document(PKI, NONCE, protected=cbor2.dumps({1: -35, 2: [99]}))
        )

    # 2. root
    def test_wrong_root(self):
        other = pki.Pki("other")
        self.assertIn(
            "nor the development root", self.refuses(UntrustedRoot, pki.document(other, NONCE))
        )

    def test_dev_document_without_dev_root(self):
        self.assertIn(
            "--dev-root", self.refuses(UntrustedRoot, pki.document(PKI, NONCE), dev_root_pem=None)
        )

    # 3. chain
    def test_leaf_signed_by_another_intermediate_key(self):
        forged = (
            pki.Pki()
        )  # same names, other keys: the leaf's issuer name matches, its signature not
        fields = dict(pki.payload_fields(PKI, NONCE), certificate=pki.der(forged.leaf))
        self.refuses(BrokenChain, pki.document(PKI, NONCE, fields=fields, signer=forged.leaf_key))

    def test_intermediate_not_signed_by_root(self):
        other = pki.Pki("test")
        fields = dict(
            pki.payload_fields(PKI, NONCE),
            cabundle=[pki.der(PKI.root), pki.der(other.intermediate)],
            certificate=pki.der(other.leaf),
        )
        self.refuses(BrokenChain, pki.document(PKI, NONCE, fields=fields, signer=other.leaf_key))

    def test_chain_out_of_order(self):
        fields = dict(
            pki.payload_fields(PKI, NONCE),
            cabundle=[pki.der(PKI.root), pki.der(PKI.leaf)],
            certificate=pki.der(PKI.intermediate),
        )
        self.refuses(BrokenChain, pki.document(PKI, NONCE, fields=fields))

    def test_issuer_without_ca_flag(self):
        not_ca = pki.Pki("notca", intermediate_ca=None)
        self.assertIn(
            "not a CA",
            self.refuses(BrokenChain, pki.document(not_ca, NONCE), dev_root_pem=not_ca.root_pem),
        )
        not_ca = pki.Pki("notca2", intermediate_ca=False)
        self.refuses(BrokenChain, pki.document(not_ca, NONCE), dev_root_pem=not_ca.root_pem)

    def test_path_length_exceeded(self):
        extra_key = pki.p384()
        extra = pki.certificate(
            "test extra",
            extra_key,
            "test intermediate",
            PKI.intermediate_key,
            pki.NOW - pki.DAY,
            pki.NOW + pki.DAY,
            ca=True,
        )
        leaf = pki.certificate(
            "test leaf",
            PKI.leaf_key,
            "test extra",
            extra_key,
            pki.NOW - pki.HOUR,
            pki.NOW + pki.HOUR,
            ca=False,
        )
        fields = dict(
            pki.payload_fields(PKI, NONCE),
            cabundle=PKI.cabundle() + [pki.der(extra)],
            certificate=pki.der(leaf),
        )
        self.assertIn(
            "allows 0", self.refuses(BrokenChain, pki.document(PKI, NONCE, fields=fields))
        )

    def test_expired_leaf_at_pinned_time(self):
        self.assertIn(
            "expired",
            self.refuses(
                CertificateNotValid, pki.document(PKI, NONCE), now=pki.NOW + 2 * pki.HOUR + 61
            ),
        )
        verify(
            pki.document(PKI, NONCE, timestamp_ms=(pki.NOW + 2 * pki.HOUR) * 1000),
            now=pki.NOW + 2 * pki.HOUR + 59,
        )

    def test_leaf_not_yet_valid(self):
        late = pki.Pki("late", leaf_window=(120, 3 * pki.HOUR))
        self.assertIn(
            "clock",
            self.refuses(
                CertificateNotValid, pki.document(late, NONCE), dev_root_pem=late.root_pem
            ),
        )

    # 4. signature
    def test_bad_signature(self):
        flip = lambda sig: sig[:10] + bytes([sig[10] ^ 1]) + sig[11:]  # noqa: E731
        self.refuses(BadSignature, pki.document(PKI, NONCE, mutate=flip))

    def test_signed_by_another_key(self):
        self.refuses(BadSignature, pki.document(PKI, NONCE, signer=pki.p384()))

    def test_payload_changed_after_signing(self):
        item = cbor2.loads(pki.document(PKI, NONCE))
        fields = cbor2.loads(item[2])
        fields["user_data"] = b"nitro-ml-attest/1 model-sha256=" + b"cd" * 32 + b" debug=0"
        item[2] = cbor2.dumps(fields)
        self.refuses(BadSignature, cbor2.dumps(item))

    def test_signature_length(self):
        self.refuses(BadSignature, pki.document(PKI, NONCE, mutate=lambda sig: sig[:95]))
        self.refuses(BadSignature, pki.document(PKI, NONCE, mutate=lambda sig: bytes(96)))

    # 5. nonce and age
    def test_wrong_nonce(self):
        self.refuses(NonceMismatch, pki.document(PKI, NONCE), nonce=bytes(32))
        self.refuses(NonceMismatch, pki.document(PKI, NONCE[:16]))

    def test_stale_document(self):
        self.refuses(StaleDocument, pki.document(PKI, NONCE, timestamp_ms=(pki.NOW - 301) * 1000))
        self.refuses(
            StaleDocument, pki.document(PKI, NONCE, timestamp_ms=(pki.NOW - 31) * 1000), max_age=30
        )

    def test_future_document(self):
        self.refuses(FutureDocument, pki.document(PKI, NONCE, timestamp_ms=(pki.NOW + 61) * 1000))
        verify(pki.document(PKI, NONCE, timestamp_ms=(pki.NOW + 59) * 1000))

    # 6. PCRs
    def test_pcr_mismatch(self):
        message = self.refuses(
            PcrMismatch, pki.document(PKI, NONCE), pcrs={0: pki.PCRS[0], 2: pki.PCRS[1]}
        )
        self.assertIn("PCR2", message)

    def test_pinned_pcr_absent(self):
        self.assertIn(
            "PCR8", self.refuses(PcrMismatch, pki.document(PKI, NONCE), pcrs={8: bytes(48)})
        )

    def test_zero_pcrs_without_allow_debug(self):
        zeros = {i: bytes(48) for i in range(16)}
        self.refuses(DebugEnclave, pki.document(PKI, NONCE, pcrs=zeros), pcrs={0: bytes(48)})

    def test_nothing_pinned(self):
        self.refuses(NothingPinned, pki.document(PKI, NONCE), pcrs={})

    def test_pins_are_checked_even_with_no_pcr_check(self):
        self.refuses(
            PcrMismatch, pki.document(PKI, NONCE), pcrs={1: pki.PCRS[0]}, no_pcr_check=True
        )

    # 7. key and statement
    def test_key_configuration(self):
        rfc_two_suites = bytes.fromhex(
            "01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e7981550008"
            "0001000100010003"
        )
        for bad in (
            b"",
            pki.key_config()[:40],
            pki.key_config() + b"\x00",
            rfc_two_suites,
            pki.key_config().replace(b"\x00\x20", b"\x00\x10", 1),
            pki.key_config()[:-2] + b"\x00\x03",
        ):
            self.refuses(BadKeyConfig, pki.document(PKI, NONCE, public_key=bad))

    def test_user_data(self):
        for bad in (
            b"",
            b"nitro-ml-attest/2 model-sha256=00 debug=0",
            b"nitro-ml-attest/1",
            b"nitro-ml-attest/1 \xff",
        ):
            self.refuses(BadUserData, pki.document(PKI, NONCE, user_data=bad))


class Hostile(unittest.TestCase):
    def test_mutated_documents_raise_only_verification_errors(self):
        """Random byte edits of a good document: each must be refused cleanly, none may crash."""
        good = pki.document(PKI, NONCE)
        rng = random.Random(9458)
        for _ in range(400):
            doc = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(len(doc))
                doc[position] = rng.randrange(256)
            if rng.random() < 0.2:
                doc = doc[: rng.randrange(len(doc))]
            try:
                verify(bytes(doc))
            except VerificationError:
                pass


class Measurements(unittest.TestCase):
    def write(self, content):
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        self.addCleanup(os.unlink, path)
        return path

    def test_nitro_cli_format(self):
        path = self.write(
            {
                "Measurements": {
                    "HashAlgorithm": "Sha384 { ... }",
                    "PCR0": pki.PCRS[0].hex(),
                    "PCR1": pki.PCRS[1].hex(),
                    "PCR2": pki.PCRS[2].hex().upper(),
                }
            }
        )
        self.assertEqual(load_measurements(path), {0: pki.PCRS[0], 1: pki.PCRS[1], 2: pki.PCRS[2]})

    def test_refused_files(self):
        for content in (
            "not json",
            [],
            {"PCR0": "00" * 48},
            {"Measurements": {}},
            {"Measurements": {"PCR0": "00" * 47}},
            {"Measurements": {"PCR0": "zz" * 48}},
            {"Measurements": {"PCR40": "00" * 48}},
        ):
            with self.assertRaises(MeasurementsError):
                load_measurements(self.write(content))
        with self.assertRaises(MeasurementsError):
            load_measurements("/nonexistent/measurements.json")

    def test_pcr_argument(self):
        self.assertEqual(parse_pcr_arg("8=" + "0f" * 48), (8, bytes([15]) * 48))
        for bad in ("8", "x=" + "00" * 48, "1=" + "00" * 10):
            with self.assertRaises(MeasurementsError):
                parse_pcr_arg(bad)

    def test_policy_refuses_bad_pins_and_roots(self):
        with self.assertRaises(MeasurementsError):
            Policy(pcrs={0: b"short"})
        with self.assertRaises(MeasurementsError):
            Policy(pcrs={0: pki.PCRS[0]}, dev_root_pem=b"not a pem")


if __name__ == "__main__":
    unittest.main()
