// Self-test of receiver.js: `node --test selftest.js` (or `npm test`) in tests/receiver.
// Starts the receiver on loopback, signs with the library's own Webhook.sign, checks the
// modes and the control API. Bounded: every request and wait has a timeout.
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { Webhook } = require("standardwebhooks");

const SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B = `whsec_${Buffer.alloc(32, 7).toString("base64")}`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "receiver-selftest-"));

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function start(listen = "127.0.0.1:0") {
  const portFile = path.join(dir, `port-${Math.random().toString(36).slice(2)}`);
  const child = spawn(
    process.execPath,
    [path.join(__dirname, "receiver.js"), "--listen", listen, "--port-file", portFile, "--secret", SECRET_A, "--secret", SECRET_B],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  child.stderr.on("data", (c) => (log += c));
  child.exited = new Promise((r) => child.on("exit", (code, signal) => r({ code, signal })));
  for (let i = 0; i < 100 && !fs.existsSync(portFile); ++i) await sleep(50);
  assert.ok(fs.existsSync(portFile), `receiver did not start: ${log}`);
  child.port = Number(fs.readFileSync(portFile, "utf8").trim());
  child.log = () => log;
  return child;
}

let rx;
let base;
before(async () => {
  rx = await start();
  base = `http://127.0.0.1:${rx.port}`;
});
after(async () => {
  if (rx.exitCode === null) rx.kill("SIGTERM");
  await rx.exited;
  fs.rmSync(dir, { recursive: true, force: true });
});

function signedHeaders(secret, id, body, ts = new Date()) {
  const sig = new Webhook(secret).sign(id, ts, body);
  return {
    "content-type": "application/json",
    "webhook-id": id,
    "webhook-timestamp": String(Math.floor(ts.getTime() / 1000)),
    "webhook-signature": sig,
  };
}

function event(n) {
  return JSON.stringify({ type: "job.succeeded", timestamp: "2024-01-01T00:00:00Z", data: { n } });
}

async function deliver(p, body, headers, extra = {}) {
  return fetch(base + p, { method: "POST", body, headers, redirect: "manual", signal: AbortSignal.timeout(5000), ...extra });
}

async function control(p, obj) {
  const res = await fetch(base + p, {
    method: obj === undefined ? "GET" : "POST",
    body: obj === undefined ? undefined : JSON.stringify(obj),
    signal: AbortSignal.timeout(5000),
  });
  return { status: res.status, json: await res.json() };
}

test("health", async () => {
  assert.deepEqual((await control("/_control/health")).json, { ok: true });
});

test("verified, tampered, other key, missing headers", async () => {
  await control("/_control/reset", {});
  const body = event(1);
  const h = signedHeaders(SECRET_A, "msg_1", body);
  assert.equal((await deliver("/hooks/a", body, h)).status, 204);
  assert.equal((await deliver("/hooks/a", event(2), h)).status, 400);
  assert.equal((await deliver("/hooks/a", body, signedHeaders(SECRET_B, "msg_1", body))).status, 204);
  const stranger = `whsec_${Buffer.alloc(32, 9).toString("base64")}`;
  assert.equal((await deliver("/hooks/a", body, signedHeaders(stranger, "msg_1", body))).status, 400);
  assert.equal((await deliver("/hooks/a", body, { "content-type": "application/json" })).status, 400);
  const { deliveries } = (await control("/_control/deliveries")).json;
  assert.deepEqual(
    deliveries.map((d) => [d.seq, d.verified, d.answered]),
    [
      [1, true, 204],
      [2, false, 400],
      [3, true, 204],
      [4, false, 400],
      [5, false, 400],
    ],
  );
  const d = deliveries[0];
  assert.equal(d.path, "/hooks/a");
  assert.equal(d.id, "msg_1");
  assert.equal(d.type, "job.succeeded");
  assert.deepEqual(d.data, { n: 1 });
  assert.equal(d.body_text, body);
  assert.equal(d.error, null);
  assert.match(deliveries[4].error, /Missing required headers/);
});

test("modes: times, per-path, redirect, gone, retry_after, status", async () => {
  await control("/_control/reset", {});
  const body = event(3);
  const h = () => signedHeaders(SECRET_A, "msg_3", body);
  assert.equal((await control("/_control", { mode: "500", times: 2 })).status, 200);
  assert.equal((await control("/_control", { mode: "redirect", path: "/hooks/r" })).status, 200);
  assert.equal((await control("/_control", { mode: "ok", path: "/hooks/ok" })).status, 200);
  assert.equal((await deliver("/hooks/ok", body, h())).status, 204); // path "ok" beats global 500
  assert.equal((await deliver("/hooks/a", body, h())).status, 500);
  assert.equal((await deliver("/hooks/a", body, h())).status, 500);
  assert.equal((await deliver("/hooks/a", body, h())).status, 204); // times used up
  const r = await deliver("/hooks/r/x", body, h());
  assert.equal(r.status, 302);
  assert.match(r.headers.get("location"), /\/_redirected$/);
  await control("/_control", { mode: "gone", path: "/hooks/g" });
  assert.equal((await deliver("/hooks/g", body, h())).status, 410);
  await control("/_control", { mode: "retry_after", retry_after: 7, status: 429, times: 1 });
  const ra = await deliver("/hooks/a", body, h());
  assert.equal(ra.status, 429);
  assert.equal(ra.headers.get("retry-after"), "7");
  await control("/_control", { mode: "retry_after" });
  const ra2 = await deliver("/hooks/a", body, h());
  assert.equal(ra2.status, 503);
  assert.equal(ra2.headers.get("retry-after"), "1");
  await control("/_control", { mode: "502" });
  assert.equal((await deliver("/hooks/a", body, h())).status, 502);
  await control("/_control", { mode: "ok" }); // clears the global rule
  assert.equal((await deliver("/hooks/a", body, h())).status, 204);
  // An unverified delivery is 400 whatever the mode, and does not use up `times`.
  await control("/_control", { mode: "500", times: 1 });
  assert.equal((await deliver("/hooks/a", "{}", h())).status, 400);
  assert.equal((await deliver("/hooks/a", body, h())).status, 500);
  assert.equal((await deliver("/hooks/a", body, h())).status, 204);
  // Bad control requests.
  assert.equal((await control("/_control", { mode: "teapot" })).status, 400);
  assert.equal((await control("/_control", { mode: "500", times: 0 })).status, 400);
  assert.equal((await control("/_control", { mode: "500", path: "hooks" })).status, 400);
  const { json } = await control("/_control/deliveries?path=/hooks/g");
  assert.deepEqual(json.deliveries.map((d) => [d.path, d.mode, d.answered]), [["/hooks/g", "gone", 410]]);
});

test("hang keeps the socket until the client gives up; close drops it", async () => {
  await control("/_control/reset", {});
  const body = event(4);
  await control("/_control", { mode: "hang", times: 1 });
  const t0 = Date.now();
  await assert.rejects(deliver("/hooks/h", body, signedHeaders(SECRET_A, "msg_4", body), { signal: AbortSignal.timeout(300) }));
  assert.ok(Date.now() - t0 >= 250);
  await sleep(100);
  let d = (await control("/_control/deliveries")).json.deliveries;
  assert.equal(d[0].mode, "hang");
  assert.equal(d[0].answered, null);
  assert.ok(d[0].closed_at_ms >= d[0].received_at_ms);
  await control("/_control", { mode: "close", times: 1 });
  await assert.rejects(deliver("/hooks/c", body, signedHeaders(SECRET_A, "msg_4", body)));
  assert.equal((await deliver("/hooks/c", body, signedHeaders(SECRET_A, "msg_4", body))).status, 204);
  d = (await control("/_control/deliveries")).json.deliveries;
  assert.deepEqual(d.map((x) => x.mode), ["hang", "close", "ok"]);
});

test("long-poll for deliveries", async () => {
  await control("/_control/reset", {});
  const body = event(5);
  const poll = control("/_control/deliveries?min=1&timeout_ms=3000");
  await sleep(100);
  await deliver("/hooks/a", body, signedHeaders(SECRET_A, "msg_5", body));
  const { json } = await poll;
  assert.equal(json.deliveries.length, 1);
  const t0 = Date.now();
  const empty = await control("/_control/deliveries?min=5&timeout_ms=200");
  assert.equal(empty.json.deliveries.length, 1);
  assert.ok(Date.now() - t0 >= 150);
});

test("restart on the same port; SIGTERM exits cleanly with a hung request open", async () => {
  const first = await start();
  const port = first.port;
  const url = `http://127.0.0.1:${port}`;
  await fetch(`${url}/_control`, { method: "POST", body: JSON.stringify({ mode: "hang" }) });
  const body = event(6);
  const hung = fetch(`${url}/hooks/a`, { method: "POST", body, headers: signedHeaders(SECRET_A, "msg_6", body), signal: AbortSignal.timeout(5000) });
  hung.catch(() => {});
  await sleep(200);
  first.kill("SIGTERM");
  const { code } = await first.exited;
  assert.equal(code, 0);
  await assert.rejects(hung);
  const second = await start(`127.0.0.1:${port}`);
  try {
    assert.equal(second.port, port);
    const res = await fetch(`http://127.0.0.1:${port}/hooks/a`, { method: "POST", body, headers: signedHeaders(SECRET_A, "msg_6", body) });
    assert.equal(res.status, 204); // a new process starts in "ok" with no deliveries recorded before
  } finally {
    second.kill("SIGTERM");
    assert.equal((await second.exited).code, 0);
  }
});

test("refuses a bad secret", async () => {
  const child = spawn(process.execPath, [path.join(__dirname, "receiver.js"), "--secret", "whsec_"], { stdio: "ignore" });
  const code = await new Promise((r) => child.on("exit", r));
  assert.equal(code, 2);
});
