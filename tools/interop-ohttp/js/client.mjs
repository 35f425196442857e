// The JavaScript leg of the interop harness: the same job and interface as the Rust binary
// (../src/main.rs), with dajiaji's HPKE and BHTTP and our RFC 9458 framing (ohttp.mjs).
//
//   node client.mjs --keys FILE --image FILE --url http://HOST:PORT [--top-k N|none]
//        [--path /predict-secure/] [--gateway /.well-known/ohttp-gateway] [--content-type TYPE]
//        [--expect-padding N]
//
// stdout: `status: N` then the inner body; stderr: sizes and fields. Exit 0 when the exchange went
// through (whatever the inner status), 1 usage or local error, 2 the gateway refused the outer
// request, 3 the answer did not open or parse, or broke --expect-padding.
import { readFileSync } from "node:fs";
import { BHttpDecoder } from "bhttp-js";
import { decapsulateResponse, encapsulateRequest, knownLengthRequest, parseKeyConfigs, selectKeyConfig } from "./ohttp.mjs";

class Exit extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function parseArgs(argv) {
  const a = { topK: "5", path: "/predict-secure/", gateway: "/.well-known/ohttp-gateway" };
  const names = {
    "--keys": "keys", "--image": "image", "--url": "url", "--top-k": "topK", "--path": "path",
    "--gateway": "gateway", "--content-type": "contentType", "--expect-padding": "expectPadding",
  };
  for (let i = 0; i < argv.length; i += 2) {
    const k = names[argv[i]];
    if (!k) throw new Exit(1, `unknown argument ${argv[i]}`);
    if (i + 1 >= argv.length) throw new Exit(1, `${argv[i]} needs a value`);
    a[k] = argv[i + 1];
  }
  for (const k of ["keys", "image", "url"]) if (!a[k]) throw new Exit(1, `--${k} is required`);
  if (!a.url.startsWith("http://")) throw new Exit(1, `${a.url}: only http:// base URLs are supported (the parent's port)`);
  if (a.expectPadding !== undefined && !(Number(a.expectPadding) >= 1)) throw new Exit(1, "--expect-padding: a number, at least 1");
  return a;
}

const guessType = (b) =>
  b[0] === 0x89 && b[1] === 0x50 ? "image/png" : b[0] === 0xff && b[1] === 0xd8 ? "image/jpeg" : "application/octet-stream";

async function run(a) {
  const read = (f) => {
    try {
      return new Uint8Array(readFileSync(f));
    } catch (e) {
      throw new Exit(1, `${f}: ${e.message}`);
    }
  };
  const keys = read(a.keys);
  const image = read(a.image);
  let config;
  try {
    config = selectKeyConfig(parseKeyConfigs(keys));
  } catch (e) {
    throw new Exit(1, e.message);
  }
  const base = new URL(a.url.replace(/\/+$/, ""));
  const prefix = base.pathname.replace(/\/+$/, "");
  const request = knownLengthRequest({
    method: "POST",
    scheme: "https",
    authority: base.host,
    path: a.topK === "none" ? a.path : `${a.path}?top_k=${a.topK}`,
    fields: [["content-type", a.contentType ?? guessType(image)]],
    content: image,
  });
  const { encapsulated, context } = await encapsulateRequest(config, request);
  let answer;
  try {
    answer = await fetch(`${base.origin}${prefix}${a.gateway}`, {
      method: "POST",
      headers: { "content-type": "message/ohttp-req", accept: "message/ohttp-res" },
      body: encapsulated,
    });
  } catch (e) {
    throw new Exit(1, `POST ${base.origin}${prefix}${a.gateway}: ${e.cause?.message ?? e.message}`);
  }
  const body = new Uint8Array(await answer.arrayBuffer());
  const ctype = answer.headers.get("content-type") ?? "";
  if (answer.status !== 200 || ctype.split(";")[0].trim().toLowerCase() !== "message/ohttp-res") {
    throw new Exit(2, `the gateway refused the request: HTTP ${answer.status} (${ctype}): ${new TextDecoder().decode(body.subarray(0, 2000))}`);
  }
  let inner, response;
  try {
    inner = await decapsulateResponse(context, body);
    if (inner[0] !== 1) throw new Error(`framing ${inner[0]}, expected known-length response (1)`);
    response = new BHttpDecoder().decodeResponse(inner);
  } catch (e) {
    throw new Exit(3, `inner response: ${e.message}`);
  }
  if (a.expectPadding !== undefined && inner.length % Number(a.expectPadding) !== 0) {
    throw new Exit(3, `inner response is ${inner.length} bytes, not a multiple of ${a.expectPadding}`);
  }
  const content = new Uint8Array(await response.arrayBuffer());
  process.stderr.write(
    `interop-ohttp (js): key id ${config.keyId}, sealed request ${encapsulated.length} bytes, sealed answer ${body.length} bytes, ` +
      `inner response ${inner.length} bytes, fields ${JSON.stringify([...response.headers])}\n`,
  );
  process.stdout.write(`status: ${response.status}\n`);
  process.stdout.write(content);
  process.stdout.write("\n");
}

try {
  await run(parseArgs(process.argv.slice(2)));
} catch (e) {
  process.stderr.write(`interop-ohttp (js): ${e.message}\n`);
  process.exitCode = e instanceof Exit ? e.code : 1;
}
