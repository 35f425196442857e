// RFC 9458 framing (sections 3, 4.3, 4.4) written here, on third-party HPKE and BHTTP: HPKE from
// dajiaji's @hpke/core with the pure-JS X25519 of @hpke/dhkem-x25519, the response's HKDF and
// AES-GCM from the runtime's WebCrypto, the inner response decoded by dajiaji's bhttp-js. Nothing
// here shares code with the Rust crates on either side (ohttp on the server, aloha in the other
// leg). Because the framing is ours, ohttp.test.mjs checks it against RFC 9458 Appendix A first.
//
// The inner request is encoded here too (knownLengthRequest, checked against the RFC 9292
// example): bhttp-js 0.2.1's encoder writes the URL's pathname without its query, so
// `?top_k=5` would be lost.
import { Aes128Gcm, CipherSuite, HkdfSha256 } from "@hpke/core";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";

const KEM_X25519 = 0x0020;
const KDF_HKDF_SHA256 = 0x0001;
const AEAD_AES128GCM = 0x0001;
const NK = 16; // AES-128-GCM key
const NN = 12; // AES-128-GCM nonce
const utf8 = new TextEncoder();

export const suite = () =>
  new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(new Uint8Array(p), at);
    at += p.byteLength;
  }
  return out;
};
const u16 = (b, at) => (b[at] << 8) | b[at + 1];

/** application/ohttp-keys (RFC 9458 section 3.2): u16-length-prefixed key configurations. */
export function parseKeyConfigs(list) {
  const out = [];
  for (let at = 0; at < list.length; ) {
    if (at + 2 > list.length) throw new Error("key configuration list: truncated length");
    const n = u16(list, at);
    if (at + 2 + n > list.length) throw new Error("key configuration list: truncated configuration");
    out.push(parseKeyConfig(list.subarray(at + 2, at + 2 + n)));
    at += 2 + n;
  }
  return out;
}

/** One key configuration (section 3.1): key_id, kem_id, public key, then (kdf, aead) pairs. */
export function parseKeyConfig(c) {
  if (c.length < 3) throw new Error("key configuration: truncated");
  const keyId = c[0];
  const kemId = u16(c, 1);
  if (kemId !== KEM_X25519) return { keyId, kemId, publicKey: null, suites: [] };
  if (c.length < 3 + 32 + 2) throw new Error("key configuration: truncated");
  const publicKey = c.slice(3, 35);
  const len = u16(c, 35);
  if (len < 4 || len % 4 !== 0 || 37 + len !== c.length) throw new Error("key configuration: bad algorithm list");
  const suites = [];
  for (let at = 37; at < c.length; at += 4) suites.push([u16(c, at), u16(c, at + 2)]);
  return { keyId, kemId, publicKey, suites };
}

/** The first configuration (the gateway's current one) offering X25519 / HKDF-SHA256 / AES-128-GCM. */
export function selectKeyConfig(configs) {
  const c = configs.find(
    (k) => k.kemId === KEM_X25519 && k.suites.some(([kdf, aead]) => kdf === KDF_HKDF_SHA256 && aead === AEAD_AES128GCM),
  );
  if (!c) throw new Error(`none of the ${configs.length} key configuration(s) offers X25519 / HKDF-SHA256 / AES-128-GCM`);
  return c;
}

/**
 * Section 4.3: hdr = key_id, kem_id, kdf_id, aead_id; info = "message/bhttp request", 0x00, hdr;
 * the encapsulated request is hdr || enc || Seal(request). Section 4.4: the response secret is
 * Export("message/bhttp response", max(Nn, Nk)). `ekm` (an ephemeral key pair) is for the test
 * vector only.
 */
export async function encapsulateRequest(config, request, ekm) {
  const s = suite();
  const hdr = new Uint8Array([config.keyId, 0x00, 0x20, 0x00, 0x01, 0x00, 0x01]);
  const info = concat(utf8.encode("message/bhttp request"), new Uint8Array([0]), hdr);
  const recipientPublicKey = await s.kem.importKey("raw", config.publicKey.buffer.slice(0), true);
  const sender = await s.createSenderContext({ recipientPublicKey, info, ...(ekm ? { ekm } : {}) });
  const ct = await sender.seal(request);
  const enc = new Uint8Array(sender.enc);
  const secret = new Uint8Array(await sender.export(utf8.encode("message/bhttp response"), Math.max(NN, NK)));
  return { encapsulated: concat(hdr, enc, ct), context: { enc, secret } };
}

/** Section 4.4: response_nonce (max(Nn, Nk) bytes) || Seal; salt = enc || response_nonce;
 * prk = Extract(salt, secret); key = Expand(prk, "key", Nk); nonce = Expand(prk, "nonce", Nn). */
export async function responseKeys({ enc, secret }, responseNonce) {
  const { subtle } = globalThis.crypto;
  const salt = concat(enc, responseNonce);
  const ikm = await subtle.importKey("raw", secret, "HKDF", false, ["deriveBits"]);
  const expand = async (label, n) =>
    new Uint8Array(await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info: utf8.encode(label) }, ikm, n * 8));
  return { key: await expand("key", NK), nonce: await expand("nonce", NN) };
}

export async function decapsulateResponse(context, encapsulated) {
  const n = Math.max(NN, NK);
  if (encapsulated.length < n + 16) throw new Error(`encapsulated response: ${encapsulated.length} bytes, too short`);
  const { key, nonce } = await responseKeys(context, encapsulated.subarray(0, n));
  const { subtle } = globalThis.crypto;
  const k = await subtle.importKey("raw", key, "AES-GCM", false, ["decrypt"]);
  try {
    return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce }, k, encapsulated.subarray(n)));
  } catch {
    throw new Error("the encapsulated response does not open (AEAD)");
  }
}

/** RFC 9292 section 4 variable-length integer. */
function varint(n) {
  if (n < 0x40) return [n];
  if (n < 0x4000) return [0x40 | (n >> 8), n & 0xff];
  if (n < 0x40000000) return [0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
  throw new Error("varint: too large for this harness");
}
const sized = (b) => concat(new Uint8Array(varint(b.byteLength)), b);

/** A known-length BHTTP request (RFC 9292 section 3: framing 0, control data, the header field
 * section, the content, an empty trailer section), no padding. */
export function knownLengthRequest({ method, scheme, authority, path, fields, content }) {
  const b = (x) => (typeof x === "string" ? utf8.encode(x) : x);
  const section = concat(...fields.flatMap(([n, v]) => [sized(b(n)), sized(b(v))]));
  return concat(
    new Uint8Array([0]),
    sized(b(method)),
    sized(b(scheme)),
    sized(b(authority)),
    sized(b(path)),
    sized(section),
    sized(b(content)),
    new Uint8Array([0]),
  );
}

export const hex = {
  decode: (s) => new Uint8Array(s.match(/../g).map((b) => parseInt(b, 16))),
  encode: (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(""),
};
