"""The sealing code against the RFCs' own examples, not only against our server.

RFC 9180 Appendix A.1.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode) pins
the HPKE package (pyhpke) to the standard; RFC 9458 Appendix A (the complete request and
response example, with its fixed ephemeral key and response nonce) checks ohttp.py's framing,
info string and response key derivation. Values copied from the RFC texts.
"""

import unittest

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, KEMKeyPair

from sealed_client import bhttp, ohttp
from sealed_client.errors import BadKeyConfig, SealedClientError, SealedResponseError

H = bytes.fromhex


class Rfc9180A11(unittest.TestCase):
    """RFC 9180 A.1.1: Base Setup Information, Encryptions (sequence 0 and 1), Exported Values."""

    info = H("4f6465206f6e2061204772656369616e2055726e")
    skEm = H("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736")
    pkEm = H("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
    skRm = H("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
    pkRm = H("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
    pt = H("4265617574792069732074727574682c20747275746820626561757479")
    encryptions = [
        (
            H("436f756e742d30"),
            H(
                "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
                "6d8770ac83d07bea87e13c512a"
            ),
        ),
        (
            H("436f756e742d31"),
            H(
                "af2d7e9ac9ae7e270f46ba1f975be53c09f8d875bdc8535458c2494e8a6eab25"
                "1c03d0c22a56b8ca42c2063b84"
            ),
        ),
    ]
    exports = [
        (b"", H("3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d0095250ee")),
        (H("00"), H("2e8f0b54673c7029649d4eb9d5e33bf1872cf76d623ff164ac185da9e88c21a5")),
        (
            H("54657374436f6e74657874"),
            H("e9e43065102c3836401bed8c3c3c75ae46be1639869391d62c61f1ec7af54931"),
        ),
    ]

    def test_sender_and_recipient(self):
        suite = CipherSuite.new(
            KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM
        )
        sk = X25519PrivateKey.from_private_bytes(self.skEm)
        ephemeral = KEMKeyPair(
            KEMKey.from_pyca_cryptography_key(sk),
            KEMKey.from_pyca_cryptography_key(sk.public_key()),
        )
        enc, sender = suite.create_sender_context(
            suite.kem.deserialize_public_key(self.pkRm), info=self.info, eks=ephemeral
        )
        self.assertEqual(enc, self.pkEm)
        recipient = suite.create_recipient_context(
            enc, suite.kem.deserialize_private_key(self.skRm), info=self.info
        )
        for aad, ct in self.encryptions:
            self.assertEqual(sender.seal(self.pt, aad=aad), ct)
            self.assertEqual(recipient.open(ct, aad=aad), self.pt)
        for context, value in self.exports:
            self.assertEqual(sender.export(context, 32), value)
            self.assertEqual(recipient.export(context, 32), value)


class Rfc9458AppendixA(unittest.TestCase):
    """RFC 9458 Appendix A: one request and response, every intermediate value the RFC lists."""

    skR = H("3c168975674b2fa8e465970b79c8dcf09f1c741626480bd4c6162fc5b6a98e1a")
    key_config = H(
        "01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e79815500080001000100010003"
    )
    request = H("00034745540568747470730b6578616d706c652e636f6d012f")
    skE = H("bc51d5e930bda26589890ac7032f70ad12e4ecb37abb1b65b1256c9c48999c73")
    pkE = H("4b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472")
    info = H("6d6573736167652f626874747020726571756573740001002000010001")
    encapsulated_request = H(
        "010020000100014b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad1"
        "9dec96c208b4726374e469135906992e1268c594d2a10c695d858c40a026e796"
        "5e7d86b83dd440b2c0185204b4d63525"
    )
    response = H("0140c8")
    exported_secret = H("62d87a6ba569ee81014c2641f52bea36")
    response_nonce = H("c789e7151fcba46158ca84b04464910d")
    aead_key = H("5d0172a080e428b16d298c4ea0db620d")
    aead_nonce = H("f6bf1aeb88d6df87007fa263")
    encapsulated_response = H(
        "c789e7151fcba46158ca84b04464910d86f9013e404feea014e7be4a441f234f857fbd"
    )

    def seal(self):
        # The RFC's configuration lists two symmetric suites; its first one is the enclave's.
        key = ohttp.KeyConfig(self.key_config[0], self.key_config[3:35])
        return ohttp.encapsulate_request(key, self.request, ephemeral_secret=self.skE)

    def test_request_header_and_info(self):
        key = ohttp.KeyConfig(1, self.key_config[3:35])
        self.assertEqual(ohttp.REQUEST_LABEL + b"\x00" + key.request_header(), self.info)

    def test_encapsulated_request(self):
        sealed, _ = self.seal()
        self.assertEqual(sealed, self.encapsulated_request)
        self.assertEqual(sealed[7:39], self.pkE)

    def test_gateway_opens_the_rfc_request(self):
        suite = ohttp._SUITE
        recipient = suite.create_recipient_context(
            self.encapsulated_request[7:39],
            suite.kem.deserialize_private_key(self.skR),
            info=self.info,
        )
        plain = recipient.open(self.encapsulated_request[39:])
        self.assertEqual(plain, self.request)
        decoded = bhttp.decode_request(plain)
        self.assertEqual(
            (decoded.method, decoded.scheme, decoded.authority, decoded.path),
            (b"GET", b"https", b"example.com", b"/"),
        )

    def test_response_keys(self):
        _, pending = self.seal()
        self.assertEqual(pending._context.export(ohttp.RESPONSE_LABEL, 16), self.exported_secret)
        self.assertEqual(
            pending.response_keys(self.response_nonce), (self.aead_key, self.aead_nonce)
        )
        sealed = AESGCM(self.aead_key).encrypt(self.aead_nonce, self.response, b"")
        self.assertEqual(self.response_nonce + sealed, self.encapsulated_response)

    def test_open_the_rfc_response(self):
        _, pending = self.seal()
        plain = pending.open(self.encapsulated_response)
        self.assertEqual(plain, self.response)
        self.assertEqual(bhttp.decode_response(plain).status, 200)

    def test_altered_or_short_response_is_refused(self):
        _, pending = self.seal()
        for bad in (
            self.encapsulated_response[:-1] + b"\x00",
            b"\x01" + self.encapsulated_response[1:],
            self.encapsulated_response[:31],
            b"",
        ):
            with self.assertRaises(SealedResponseError):
                pending.open(bad)

    def test_low_order_key_cannot_be_sealed_to(self):
        with self.assertRaises(SealedClientError):
            ohttp.encapsulate_request(ohttp.KeyConfig(1, bytes(32)), self.request)

    def test_key_configuration_with_two_suites_is_not_the_enclave_s(self):
        with self.assertRaises(BadKeyConfig):
            ohttp.parse_key_config(self.key_config)
        single = self.key_config[:35] + H("000400010001")
        key = ohttp.parse_key_config(single)
        self.assertEqual((key.key_id, key.public_key), (1, self.key_config[3:35]))
        self.assertEqual(key.encode(), single)


if __name__ == "__main__":
    unittest.main()
