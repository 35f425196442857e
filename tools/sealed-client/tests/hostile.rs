//! Hostile documents: the parent serves the document, so any bytes may
//! arrive. Hundreds of mutations of a good crafted document and of the real
//! AWS one (bytes flipped, changed, inserted, removed, truncated) must each
//! end in a `VerifyError`, never a panic, and never be accepted. The test
//! runs in the debug profile, where arithmetic overflow panics too.

mod common;

use common::dev::{Chain, NONCE};
use common::{aws_policy, field_bytes, pinned, REAL_DOC, REAL_PCRS, REAL_TIMESTAMP_MS};
use sealed_client::verify::{verify, verify_attestation, Policy};

/// xorshift64*: a fixed sequence, so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut doc = original.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(doc.len());
        match rng.below(6) {
            0 => doc[at] ^= 1 << rng.below(8),
            1 => doc[at] = rng.next() as u8,
            // CBOR heads live here: make lengths and types wrong.
            2 => doc[at] = [0x00, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x5f, 0x7f, 0x9f, 0xbf, 0xff, 0xf6][rng.below(12)],
            3 => doc.insert(at, rng.next() as u8),
            4 => {
                doc.remove(at);
            }
            _ => doc.truncate(at.max(1)),
        }
        if doc.is_empty() {
            doc.push(0);
        }
    }
    doc
}

fn survives(original: &[u8], check: impl Fn(&[u8]) -> bool, seed: u64, rounds: usize) {
    let mut rng = Rng(seed);
    let mut refused = 0;
    for round in 0..rounds {
        let doc = mutate(&mut rng, original);
        if doc == original {
            continue;
        }
        assert!(!check(&doc), "round {round}: a mutated document was accepted");
        refused += 1;
    }
    assert!(refused > rounds * 9 / 10);
}

#[test]
fn mutated_crafted_documents_are_refused_without_panic() {
    let chain = Chain::new();
    let document = chain.document();
    let policy: Policy = chain.policy();
    assert!(verify(&document, &NONCE, &policy).is_ok());
    survives(&document, |doc| verify(doc, &NONCE, &policy).is_ok(), 0x5eed_0001, 1000);
}

#[test]
fn mutated_real_documents_are_refused_without_panic() {
    let nonce = field_bytes(REAL_DOC, "nonce");
    let policy = aws_policy(REAL_TIMESTAMP_MS, pinned(&REAL_PCRS));
    assert!(verify_attestation(REAL_DOC, &nonce, &policy).is_ok());
    survives(
        REAL_DOC,
        |doc| verify_attestation(doc, &nonce, &policy).is_ok(),
        0x5eed_0002,
        3000,
    );
}

#[test]
fn random_bytes_are_refused_without_panic() {
    let chain = Chain::new();
    let policy = chain.policy();
    let mut rng = Rng(0x5eed_0003);
    for _ in 0..2000 {
        let len = rng.below(64);
        let mut doc: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half of them start like a COSE_Sign1.
        if rng.below(2) == 0 {
            doc.splice(0..0, [0xd2, 0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0]);
        }
        assert!(verify(&doc, &NONCE, &policy).is_err());
    }
}
