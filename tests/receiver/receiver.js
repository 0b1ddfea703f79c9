#!/usr/bin/env node
// Webhook receiver for Segue's end-to-end tests. Every delivery is verified with the official
// Standard Webhooks library (npm "standardwebhooks"), recorded, and answered per the current
// mode (ok, an error status, redirect, gone, hang, close, retry_after). See README.md.
"use strict";

const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const { Webhook } = require("standardwebhooks");

const MAX_BODY = 10 * 1024 * 1024;

function usage(message) {
  if (message) process.stderr.write(`receiver: ${message}\n`);
  process.stderr.write(
    "usage: node receiver.js --secret whsec_... [--secret whsec_...] " +
      "[--listen HOST:PORT] [--port-file FILE]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { host: "127.0.0.1", port: 0, portFile: null, secrets: [] };
  for (let i = 0; i < argv.length; ++i) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    const value = () => {
      if (eq > 0 && arg.startsWith("--")) return arg.slice(eq + 1);
      if (i + 1 >= argv.length) usage(`${name} needs a value`);
      return argv[++i];
    };
    switch (name) {
      case "--listen": {
        const v = value();
        const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(v);
        if (!m) usage(`--listen wants HOST:PORT, got ${v}`);
        opts.host = m[1] || "127.0.0.1";
        opts.port = Number(m[2]);
        if (opts.port > 65535) usage(`bad port in ${v}`);
        break;
      }
      case "--port-file":
        opts.portFile = value();
        break;
      case "--secret":
        opts.secrets.push(value());
        break;
      case "-h":
      case "--help":
        usage();
        break;
      default:
        usage(`unknown argument ${arg}`);
    }
  }
  if (opts.secrets.length === 0) usage("at least one --secret is required");
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const verifiers = opts.secrets.map((s, i) => {
  try {
    return new Webhook(s);
  } catch (e) {
    usage(`--secret #${i + 1} refused: ${e.message}`);
  }
});

// ---- state ----------------------------------------------------------------------------------
let deliveries = [];
let seq = 0;
// Rules: { path: null (global) | prefix, mode, times: null | remaining, retry_after,
// retry_after_date, status, location, delay_ms, body_bytes, chunked }. The longest matching
// path prefix wins, then the global rule, else "ok".
let rules = [];
const waiters = new Set(); // long-polls of GET /_control/deliveries?min=N

const MODES = new Set(["ok", "redirect", "gone", "hang", "close", "retry_after"]);

function ruleFor(urlPath) {
  let best = null;
  for (const r of rules) {
    if (r.path === null) {
      if (!best) best = r;
    } else if (urlPath.startsWith(r.path) && (!best || best.path === null || r.path.length > best.path.length)) {
      best = r;
    }
  }
  return best;
}

function consume(rule) {
  if (rule && rule.times !== null && --rule.times <= 0) rules = rules.filter((r) => r !== rule);
}

function validateRule(body) {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return "body must be a JSON object";
  const mode = body.mode === undefined ? "ok" : String(body.mode);
  if (!MODES.has(mode) && !/^[2-5]\d\d$/.test(mode)) return `unknown mode ${mode}`;
  const rule = {
    path: null, mode, times: null, retry_after: null, retry_after_date: false, status: null, location: null,
    delay_ms: 0, body_bytes: null, chunked: false,
  };
  if (body.path !== undefined && body.path !== null) {
    if (typeof body.path !== "string" || !body.path.startsWith("/")) return "path must start with /";
    rule.path = body.path;
  }
  for (const k of ["retry_after_date", "chunked"]) {
    if (body[k] === undefined || body[k] === null) continue;
    if (typeof body[k] !== "boolean") return `${k} must be a boolean`;
    rule[k] = body[k];
  }
  for (const k of ["times", "retry_after", "status", "delay_ms", "body_bytes"]) {
    if (body[k] === undefined || body[k] === null) continue;
    if (!Number.isInteger(body[k]) || body[k] < 0) return `${k} must be a non-negative integer`;
    rule[k] = body[k];
  }
  if (rule.times === 0) return "times must be at least 1";
  if (rule.status !== null && (rule.status < 200 || rule.status > 599)) return "status must be 200..599";
  if (body.location !== undefined) rule.location = String(body.location);
  return rule;
}

function notifyWaiters() {
  for (const w of waiters) w();
}

// ---- HTTP -------------------------------------------------------------------------------------
function sendJson(res, status, obj) {
  const text = JSON.stringify(obj);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req, cb) {
  const chunks = [];
  let size = 0;
  let tooBig = false;
  req.on("data", (c) => {
    size += c.length;
    if (size > MAX_BODY) tooBig = true;
    else chunks.push(c);
  });
  req.on("end", () => cb(tooBig ? null : Buffer.concat(chunks)));
  req.on("error", () => {});
}

function verify(raw, headers) {
  let error = null;
  for (const wh of verifiers) {
    try {
      wh.verify(raw, headers, { jsonParse: false });
      return { verified: true, error: null };
    } catch (e) {
      error = error || e.message;
    }
  }
  return { verified: false, error };
}

function handleControl(req, res, url) {
  const route = url.pathname;
  if (req.method === "GET" && route === "/_control/health") return sendJson(res, 200, { ok: true });
  if (req.method === "GET" && route === "/_control") return sendJson(res, 200, { rules });
  if (req.method === "GET" && route === "/_control/deliveries") {
    const prefix = url.searchParams.get("path");
    const min = Number(url.searchParams.get("min") || 0);
    const timeoutMs = Math.min(Number(url.searchParams.get("timeout_ms") || 0), 60000);
    const select = () => (prefix ? deliveries.filter((d) => d.path.startsWith(prefix)) : deliveries);
    if (select().length >= min || !(timeoutMs > 0)) return sendJson(res, 200, { deliveries: select() });
    // Long-poll: answer as soon as `min` deliveries are there, or at the timeout with what is.
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      waiters.delete(check);
      clearTimeout(timer);
      sendJson(res, 200, { deliveries: select() });
    };
    const check = () => {
      if (select().length >= min) finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    waiters.add(check);
    res.on("close", () => {
      done = true;
      waiters.delete(check);
      clearTimeout(timer);
    });
    return;
  }
  if (req.method === "POST" && (route === "/_control" || route === "/_control/reset")) {
    return readBody(req, (raw) => {
      if (route === "/_control/reset") {
        deliveries = [];
        rules = [];
        seq = 0;
        process.stderr.write("receiver: reset\n");
        return sendJson(res, 200, { ok: true });
      }
      let body;
      try {
        body = JSON.parse(raw ? raw.toString("utf8") : "");
      } catch (e) {
        return sendJson(res, 400, { ok: false, error: `bad JSON: ${e.message}` });
      }
      const rule = validateRule(body);
      if (typeof rule === "string") return sendJson(res, 400, { ok: false, error: rule });
      rules = rules.filter((r) => r.path !== rule.path);
      // A permanent plain global "ok" is the default: it just clears the global rule. (A path's
      // "ok" is kept: it overrides a global rule for that path.)
      const plainOk = rule.mode === "ok" && rule.times === null && rule.status === null && rule.delay_ms === 0;
      if (!(plainOk && rule.path === null)) rules.push(rule);
      process.stderr.write(`receiver: rule ${JSON.stringify(rule)}\n`);
      return sendJson(res, 200, { ok: true, rules });
    });
  }
  return sendJson(res, 404, { ok: false, error: `no control route ${req.method} ${route}` });
}

function handleDelivery(req, res, url) {
  const receivedAt = Date.now();
  readBody(req, (raw) => {
    const record = {
      seq: ++seq,
      method: req.method,
      path: url.pathname,
      url: req.url,
      id: req.headers["webhook-id"] ?? null,
      timestamp: req.headers["webhook-timestamp"] ?? null,
      signature: req.headers["webhook-signature"] ?? null,
      headers: req.headers,
      verified: false,
      error: null,
      body: null,
      body_text: null,
      type: null,
      event_timestamp: null,
      data: null,
      received_at_ms: receivedAt,
      mode: null,
      answered: null,
      closed_at_ms: null,
    };
    let status;
    let headers = {};
    let rule = null;
    if (raw === null) {
      record.error = `body over ${MAX_BODY} bytes`;
      record.mode = "too_large";
      status = 413;
    } else {
      record.body_text = raw.toString("utf8");
      try {
        record.body = JSON.parse(record.body_text);
        if (record.body && typeof record.body === "object") {
          record.type = record.body.type ?? null;
          record.event_timestamp = record.body.timestamp ?? null;
          record.data = record.body.data ?? null;
        }
      } catch {
        record.body = null;
      }
      const v = verify(raw, req.headers);
      record.verified = v.verified;
      record.error = v.error;
      if (!v.verified) {
        record.mode = "unverified";
        status = 400;
      } else {
        rule = ruleFor(record.path);
        consume(rule);
        record.mode = rule ? rule.mode : "ok";
        switch (record.mode) {
          case "ok":
            status = (rule && rule.status) || 204;
            break;
          case "redirect":
            status = (rule && rule.status) || 302;
            headers.location = (rule && rule.location) || `http://${req.headers.host || "127.0.0.1"}/_redirected`;
            break;
          case "gone":
            status = 410;
            break;
          case "retry_after":
            status = (rule && rule.status) || 503;
            {
              const secs = rule && rule.retry_after !== null ? rule.retry_after : 1;
              // An HTTP-date (IMF-fixdate, whole seconds) instead of delta-seconds on request.
              headers["retry-after"] = rule && rule.retry_after_date
                ? new Date(Date.now() + secs * 1000).toUTCString()
                : String(secs);
            }
            break;
          case "hang":
          case "close":
            status = null;
            break;
          default:
            status = Number(record.mode);
        }
      }
    }
    record.answered = status;
    deliveries.push(record);
    res.on("close", () => {
      if (!res.writableFinished) record.closed_at_ms = Date.now();
    });
    process.stderr.write(
      `receiver: ${req.method} ${req.url} id=${record.id} verified=${record.verified}` +
        `${record.error ? ` error="${record.error}"` : ""} -> ${status === null ? record.mode : status}\n`,
    );
    notifyWaiters();
    if (record.mode === "hang") return; // the socket stays open until the client gives up
    if (record.mode === "close") return req.socket.destroy();
    const answer = () => {
      if (res.destroyed) return;
      if (rule && rule.body_bytes !== null && status !== 204) {
        // A body of body_bytes bytes ("x"s), with Content-Length or chunked.
        const text = "x".repeat(rule.body_bytes);
        const framing = rule.chunked ? {} : { "content-length": Buffer.byteLength(text) };
        res.writeHead(status, { ...headers, "content-type": "text/plain", ...framing });
        // Chunked: several writes, so the body really comes in pieces.
        const piece = 16384;
        for (let i = 0; i < text.length; i += piece) res.write(text.slice(i, i + piece));
        return res.end();
      }
      const text = status === 204 ? "" : JSON.stringify({ ok: status < 300, error: record.error || undefined });
      res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    };
    if (rule && rule.delay_ms > 0) setTimeout(answer, rule.delay_ms);
    else answer();
  });
}

const server = http.createServer((req, res) => {
  let url;
  try {
    url = new URL(req.url, "http://receiver");
  } catch {
    return sendJson(res, 400, { ok: false, error: "bad URL" });
  }
  if (url.pathname === "/_control" || url.pathname.startsWith("/_control/")) return handleControl(req, res, url);
  if (req.method === "POST") return handleDelivery(req, res, url);
  return sendJson(res, 405, { ok: false, error: "deliveries are POSTs" });
});
// Tests may hang a request for as long as the gateway's own timeout: no server-side limits.
server.requestTimeout = 0;
server.headersTimeout = 60000;

server.on("error", (e) => {
  process.stderr.write(`receiver: ${e.message}\n`);
  process.exit(1);
});

server.listen(opts.port, opts.host, () => {
  const port = server.address().port;
  if (opts.portFile) {
    const tmp = path.join(path.dirname(opts.portFile), `.${path.basename(opts.portFile)}.${process.pid}.tmp`);
    fs.writeFileSync(tmp, `${port}\n`);
    fs.renameSync(tmp, opts.portFile);
  }
  process.stderr.write(`receiver: listening on ${opts.host}:${port} with ${verifiers.length} secret(s)\n`);
});

function shutdown(signal) {
  process.stderr.write(`receiver: ${signal}, exiting\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections(); // includes hung deliveries and idle keep-alive sockets
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
