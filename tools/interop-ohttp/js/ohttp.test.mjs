// node --test: our RFC 9458 framing (ohttp.mjs) against RFC 9458 Appendix A, byte for byte, and the
// BHTTP library's handling of the inner messages the contract (docs/SEALED.md) uses.
import assert from "node:assert/strict";
import { test } from "node:test";
import { BHttpDecoder, BHttpEncoder } from "bhttp-js";
import {
  decapsulateResponse,
  encapsulateRequest,
  hex,
  knownLengthRequest,
  parseKeyConfig,
  parseKeyConfigs,
  responseKeys,
  selectKeyConfig,
  suite,
} from "./ohttp.mjs";

// RFC 9458 Appendix A.
const A = {
  skR: "3c168975674b2fa8e465970b79c8dcf09f1c741626480bd4c6162fc5b6a98e1a",
  keyConfig: "01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e79815500080001000100010003",
  publicKey: "31e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e798155",
  skE: "bc51d5e930bda26589890ac7032f70ad12e4ecb37abb1b65b1256c9c48999c73",
  pkE: "4b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472",
  request: "00034745540568747470730b6578616d706c652e636f6d012f",
  info: "6d6573736167652f626874747020726571756573740001002000010001",
  encRequest:
    "010020000100014b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472" +
    "6374e469135906992e1268c594d2a10c695d858c40a026e7965e7d86b83dd440b2c0185204b4d63525",
  response: "0140c8",
  secret: "62d87a6ba569ee81014c2641f52bea36",
  responseNonce: "c789e7151fcba46158ca84b04464910d",
  aeadKey: "5d0172a080e428b16d298c4ea0db620d",
  aeadNonce: "f6bf1aeb88d6df87007fa263",
  encResponse: "c789e7151fcba46158ca84b04464910d86f9013e404feea014e7be4a441f234f857fbd",
};
const h = hex.decode;
const prefixed = (c) => new Uint8Array([c.length >> 8, c.length & 0xff, ...c]);

test("RFC 9458 A: key configuration", () => {
  const c = parseKeyConfig(h(A.keyConfig));
  assert.equal(c.keyId, 1);
  assert.equal(hex.encode(c.publicKey), A.publicKey);
  assert.deepEqual(c.suites, [[1, 1], [1, 3]]);
  const other = h("02" + "0010" + "00".repeat(65)); // a P-256 configuration first: skipped
  const list = new Uint8Array([...prefixed(other), ...prefixed(h(A.keyConfig))]);
  const configs = parseKeyConfigs(list);
  assert.equal(configs.length, 2);
  assert.equal(selectKeyConfig(configs).keyId, 1);
  assert.throws(() => parseKeyConfigs(list.subarray(0, list.length - 1)), /truncated/);
  assert.throws(() => selectKeyConfig([configs[0]]), /none of the 1/);
});

test("RFC 9458 A: encapsulated request, byte for byte", async () => {
  const s = suite();
  const ekm = {
    privateKey: await s.kem.importKey("raw", h(A.skE).buffer, false),
    publicKey: await s.kem.importKey("raw", h(A.pkE).buffer, true),
  };
  const { encapsulated, context } = await encapsulateRequest(parseKeyConfig(h(A.keyConfig)), h(A.request), ekm);
  assert.equal(hex.encode(encapsulated), A.encRequest);
  assert.equal(hex.encode(context.enc), A.pkE);
  assert.equal(hex.encode(context.secret), A.secret);
});

test("RFC 9458 A: the gateway opens it with the info string", async () => {
  const s = suite();
  const recipientKey = await s.kem.importKey("raw", h(A.skR).buffer, false);
  const enc = h(A.encRequest);
  const r = await s.createRecipientContext({ recipientKey, enc: enc.slice(7, 39).buffer, info: h(A.info) });
  assert.equal(hex.encode(new Uint8Array(await r.open(enc.slice(39)))), A.request);
});

test("RFC 9458 A: encapsulated response", async () => {
  const context = { enc: h(A.pkE), secret: h(A.secret) };
  const { key, nonce } = await responseKeys(context, h(A.responseNonce));
  assert.equal(hex.encode(key), A.aeadKey);
  assert.equal(hex.encode(nonce), A.aeadNonce);
  assert.equal(hex.encode(await decapsulateResponse(context, h(A.encResponse))), A.response);
  const bad = h(A.encResponse);
  bad[bad.length - 1] ^= 1;
  await assert.rejects(decapsulateResponse(context, bad), /does not open/);
});

test("bhttp-js: RFC 9458 A's response, and a padded known-length response", async () => {
  const d = new BHttpDecoder();
  assert.equal(d.decodeResponse(h(A.response)).status, 200);
  // 01, status 200, fields {content-type: application/json}, content, no trailers, zeros to 4096.
  const body = utf8(`{"class_ids":[285]}`);
  const fields = [12, ...utf8("content-type"), 16, ...utf8("application/json")];
  const m = new Uint8Array(4096);
  m.set([0x01, 0x40, 0xc8, fields.length, ...fields, body.length, ...body, 0x00]);
  const r = d.decodeResponse(m);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("content-type"), "application/json");
  assert.equal(await r.text(), `{"class_ids":[285]}`);
});

test("RFC 9292 section 5.1's known-length request, and ours with a query and content", async () => {
  const rfc = knownLengthRequest({
    method: "GET",
    scheme: "https",
    authority: "",
    path: "/hello.txt",
    fields: [
      ["user-agent", "curl/7.16.3 libcurl/7.16.3 OpenSSL/0.9.7l zlib/1.2.3"],
      ["host", "www.example.com"],
      ["accept-language", "en, mi"],
    ],
    content: new Uint8Array(),
  });
  assert.equal(
    hex.encode(rfc),
    "0003474554056874747073000a2f68656c6c6f2e747874406c0a757365722d6167656e74346375726c2f372e31362e33" +
      "206c69626375726c2f372e31362e33204f70656e53534c2f302e392e376c207a6c69622f312e322e3304686f73740f77" +
      "77772e6578616d706c652e636f6d0f6163636570742d6c616e677561676506656e2c206d690000",
  );
  const image = new Uint8Array(300).fill(0xab);
  const m = knownLengthRequest({
    method: "POST",
    scheme: "https",
    authority: "127.0.0.1:8080",
    path: "/predict-secure/?top_k=5",
    fields: [["content-type", "image/jpeg"]],
    content: image,
  });
  const back = new BHttpDecoder().decodeRequest(m);
  assert.equal(back.method, "POST");
  assert.equal(back.headers.get("content-type"), "image/jpeg");
  assert.deepEqual(new Uint8Array(await back.arrayBuffer()), image);
  // Our bytes, by hand: the path keeps its query, the 300-byte content has a 2-byte length.
  const path = utf8("/predict-secure/?top_k=5");
  const at = 1 + 5 + 6 + 15;
  assert.deepEqual(Array.from(m.subarray(at, at + 1 + path.length)), [path.length, ...path]);
  assert.deepEqual(Array.from(m.subarray(m.length - 303, m.length - 301)), [0x41, 0x2c]);
  assert.equal(m[m.length - 1], 0, "empty trailer section, no padding");
});

function utf8(s) {
  return new TextEncoder().encode(s);
}
