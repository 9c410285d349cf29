// harness.mjs: built from crates/harness-bundle/ts by `cargo xtask bundle`; do not edit.
var __defProp = Object.defineProperty;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __esm = (fn, res, err) => function __init() {
  if (err) throw err[0];
  try {
    return fn && (res = (0, fn[__getOwnPropNames(fn)[0]])(fn = 0)), res;
  } catch (e) {
    throw err = [e], e;
  }
};
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};

// src/errors.ts
var statusOf, HttpError, validation, notFound;
var init_errors = __esm({
  "src/errors.ts"() {
    "use strict";
    statusOf = {
      VALIDATION: 400,
      UNKNOWN_ENGINE: 400,
      PATH_ESCAPE: 400,
      NOT_A_FILE: 400,
      NOT_A_DIRECTORY: 400,
      EDIT_NO_MATCH: 400,
      EDIT_AMBIGUOUS: 400,
      UNAUTHORIZED: 401,
      NOT_FOUND: 404,
      METHOD_NOT_ALLOWED: 405,
      CONFLICT: 409,
      SESSION_ENDED: 409,
      INPUT_ENDED: 409,
      EVENTS_EXPIRED: 410,
      PAYLOAD_TOO_LARGE: 413,
      INTERNAL: 500,
      ENGINE_UNAVAILABLE: 503
    };
    HttpError = class extends Error {
      constructor(code, message, details) {
        super(message);
        this.code = code;
        this.details = details;
        this.status = statusOf[code];
      }
      code;
      details;
      status;
      body() {
        const error = { code: this.code, message: this.message };
        if (this.details !== void 0) error.details = this.details;
        return JSON.stringify({ error });
      }
    };
    validation = (message) => new HttpError("VALIDATION", message);
    notFound = (message) => new HttpError("NOT_FOUND", message);
  }
});

// src/http.ts
import { createHash, timingSafeEqual } from "node:crypto";
function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
function sendEmpty(res, status) {
  res.writeHead(status);
  res.end();
}
function sendError(res, err) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = err.body();
  const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(text) };
  if (err.code === "PAYLOAD_TOO_LARGE") drainRest(res);
  res.writeHead(err.status, headers);
  res.end(text);
}
function drainRest(res) {
  const req = res.req;
  if (!req || req.readableEnded) return;
  let drained = 0;
  req.on("data", (chunk) => {
    drained += chunk.length;
    if (drained > DRAIN_CAP) req.socket.destroy();
  });
  req.resume();
}
function readBody(req, limit) {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    let done = false;
    req.on("data", (chunk) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        done = true;
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!done) {
        done = true;
        resolve(Buffer.concat(chunks));
      }
    });
    req.on("error", (e) => {
      if (!done) {
        done = true;
        reject(e);
      }
    });
  });
}
function tooLarge(limit) {
  return new HttpError("PAYLOAD_TOO_LARGE", `body larger than ${limit} bytes`);
}
async function readJsonObject(req, limit) {
  const raw = await readBody(req, limit);
  let value;
  try {
    value = raw.length === 0 ? {} : JSON.parse(raw.toString("utf8"));
  } catch (e) {
    throw validation(`body is not valid JSON: ${e.message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw validation("body must be a JSON object");
  return value;
}
function authorized(req, token) {
  if (token === void 0) return true;
  const header = req.headers.authorization ?? "";
  const match = /^Bearer (.+)$/.exec(header);
  if (!match) return false;
  return timingSafeEqual(digest(match[1]), digest(token));
}
var DRAIN_CAP, digest;
var init_http = __esm({
  "src/http.ts"() {
    "use strict";
    init_errors();
    DRAIN_CAP = 64 * 1024 * 1024;
    digest = (s) => createHash("sha256").update(s).digest();
  }
});

// src/jail.ts
import fs2 from "node:fs";
import path3 from "node:path";
function inside(root, p) {
  return p === root || p.startsWith(root + path3.sep);
}
function resolveInside(workdir, rel, followFinal = true) {
  if (typeof rel !== "string" || rel === "") throw validation("path is required");
  if (rel.includes("\0")) throw escape(rel.replace(/\0/g, "\\0"), "contains a NUL byte");
  if (path3.isAbsolute(rel) || rel.startsWith("\\")) throw escape(rel, "is absolute; paths are relative to the workdir");
  if (rel.split(/[\\/]+/).includes("..")) throw escape(rel, "contains `..`");
  const realRoot = fs2.realpathSync(workdir);
  const full = path3.resolve(realRoot, rel);
  if (!inside(realRoot, full)) throw escape(rel, "leaves the workdir");
  let existing = followFinal ? full : path3.dirname(full);
  const tail = followFinal ? [] : [path3.basename(full)];
  for (; ; ) {
    try {
      fs2.lstatSync(existing);
      break;
    } catch {
      tail.unshift(path3.basename(existing));
      existing = path3.dirname(existing);
    }
  }
  let real;
  try {
    real = fs2.realpathSync(existing);
  } catch {
    throw escape(rel, "goes through a dangling symlink");
  }
  if (!inside(realRoot, real)) throw escape(rel, "resolves outside the workdir through a symlink");
  const result = path3.join(real, ...tail);
  if (!inside(realRoot, result)) throw escape(rel, "leaves the workdir");
  return result;
}
function relative(workdir, p) {
  const rel = path3.relative(fs2.realpathSync(workdir), p);
  return rel === "" ? "." : rel.split(path3.sep).join("/");
}
var escape;
var init_jail = __esm({
  "src/jail.ts"() {
    "use strict";
    init_errors();
    escape = (p, why) => new HttpError("PATH_ESCAPE", `path ${JSON.stringify(p)} ${why}`);
  }
});

// src/validate.ts
function str(o, key, where, required = false) {
  const v = o[key];
  if (v === void 0 || v === null) {
    if (required) throw validation(`${where}${key} is required (a string)`);
    return void 0;
  }
  if (typeof v !== "string") throw validation(`${where}${key} must be a string`);
  return v;
}
function strArray(o, key, where) {
  const v = o[key];
  if (v === void 0 || v === null) return void 0;
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw validation(`${where}${key} must be an array of strings`);
  return v;
}
function num(o, key, where) {
  const v = o[key];
  if (v === void 0 || v === null) return void 0;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw validation(`${where}${key} must be a non-negative number`);
  return v;
}
function bool(o, key, where) {
  const v = o[key];
  if (v === void 0 || v === null) return void 0;
  if (typeof v !== "boolean") throw validation(`${where}${key} must be true or false`);
  return v;
}
function userMessage(v, where) {
  if (typeof v === "string") return v;
  if (isObj(v) && v.role === "user" && (typeof v.content === "string" || Array.isArray(v.content))) {
    return { role: "user", content: v.content };
  }
  throw validation(`${where} must be a string or {"role": "user", "content": string | blocks}`);
}
function fileSpec(v, where) {
  if (!isObj(v)) throw validation(`${where} must be an object {path, content, encoding?, mode?}`);
  const path7 = str(v, "path", `${where}.`, true);
  const content = str(v, "content", `${where}.`, true);
  const encoding = str(v, "encoding", `${where}.`) ?? "utf8";
  if (encoding !== "utf8" && encoding !== "base64") throw validation(`${where}.encoding must be "utf8" or "base64"`);
  const mode = num(v, "mode", `${where}.`);
  if (mode !== void 0 && (!Number.isInteger(mode) || mode > 4095)) throw validation(`${where}.mode must be Unix mode bits (0\u20130o7777)`);
  return { path: path7, content, encoding, mode };
}
function options(v) {
  if (v === void 0 || v === null) return {};
  if (!isObj(v)) throw validation("options must be an object");
  const w = "options.";
  const extra = v.extra;
  if (extra !== void 0 && extra !== null && !isObj(extra)) throw validation("options.extra must be an object");
  return {
    model: str(v, "model", w),
    systemPrompt: str(v, "systemPrompt", w),
    appendSystemPrompt: str(v, "appendSystemPrompt", w),
    maxTurns: num(v, "maxTurns", w),
    maxBudgetUsd: num(v, "maxBudgetUsd", w),
    permissionMode: str(v, "permissionMode", w),
    allowedTools: strArray(v, "allowedTools", w),
    disallowedTools: strArray(v, "disallowedTools", w),
    includePartialMessages: bool(v, "includePartialMessages", w),
    resume: str(v, "resume", w),
    extra: extra ?? void 0
  };
}
function source(v) {
  if (v === void 0 || v === null) return void 0;
  if (!isObj(v)) throw validation("source must be an object with a type: files | git | dir");
  switch (v.type) {
    case "files": {
      if (!Array.isArray(v.files)) throw validation("source.files must be an array");
      return { type: "files", files: v.files.map((f, i) => fileSpec(f, `source.files[${i}]`)) };
    }
    case "git": {
      const url = str(v, "url", "source.", true);
      if (url.startsWith("-") || !/^(https?|ssh|git|file):\/\/|^[\w.-]+@[\w.-]+:/.test(url)) {
        throw validation("source.url must be an https://, http://, ssh://, git://, file:// or user@host: URL");
      }
      const ref = str(v, "ref", "source.");
      if (ref !== void 0 && (ref.startsWith("-") || ref === "")) throw validation("source.ref must be a branch or tag name");
      return { type: "git", url, ref };
    }
    case "dir":
      return { type: "dir", path: str(v, "path", "source.", true) };
    default:
      throw validation("source.type must be one of files, git, dir");
  }
}
function createSessionBody(o) {
  const engine = str(o, "engine", "", true);
  const sessionId = str(o, "sessionId", "");
  if (sessionId !== void 0 && !SESSION_ID.test(sessionId)) {
    throw validation("sessionId must match ^sess_[A-Za-z0-9_-]{1,64}$");
  }
  const envs = o.envs ?? {};
  if (!isObj(envs) || !Object.values(envs).every((x) => typeof x === "string")) {
    throw validation("envs must be an object of string values");
  }
  const messages = o.messages ?? [];
  if (!Array.isArray(messages)) throw validation("messages must be an array");
  const attachments = o.attachments ?? [];
  if (!Array.isArray(attachments)) throw validation("attachments must be an array");
  return {
    engine,
    sessionId,
    identity: o.identity ?? null,
    envs,
    messages: messages.map((m, i) => userMessage(m, `messages[${i}]`)),
    streamingInput: bool(o, "streamingInput", "") ?? true,
    options: options(o.options),
    source: source(o.source),
    attachments: attachments.map((a, i) => fileSpec(a, `attachments[${i}]`))
  };
}
var SESSION_ID, isObj;
var init_validate = __esm({
  "src/validate.ts"() {
    "use strict";
    init_errors();
    SESSION_ID = /^sess_[A-Za-z0-9_-]{1,64}$/;
    isObj = (v) => typeof v === "object" && v !== null && !Array.isArray(v);
  }
});

// src/fsroutes.ts
var fsroutes_exports = {};
__export(fsroutes_exports, {
  handleFs: () => handleFs,
  isObj: () => isObj,
  writeFileSpec: () => writeFileSpec
});
import fs3 from "node:fs";
import fsp from "node:fs/promises";
import path4 from "node:path";
import { randomBytes } from "node:crypto";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";
async function lstatOrNull(p) {
  try {
    return await fsp.lstat(p);
  } catch (e) {
    if (e.code === "ENOENT") return null;
    throw e;
  }
}
function parseMode(raw) {
  if (raw === null || raw === "") return void 0;
  if (!/^[0-7]{1,4}$/.test(raw)) throw validation("mode must be octal Unix mode bits, e.g. 644");
  return parseInt(raw, 8);
}
async function writeAtomic(target, data, mode) {
  const tmp = path4.join(path4.dirname(target), `.${path4.basename(target)}.${randomBytes(6).toString("hex")}.tmp`);
  await fsp.writeFile(tmp, data, mode === void 0 ? {} : { mode });
  if (mode !== void 0) await fsp.chmod(tmp, mode);
  await fsp.rename(tmp, target);
}
async function handleFs(op, req, res, url, workdir, limits) {
  const q = url.searchParams;
  const method = req.method ?? "GET";
  const methodNotAllowed = () => new HttpError("METHOD_NOT_ALLOWED", `${method} is not allowed on fs/${op}`);
  if (op === "file") {
    if (method === "GET") {
      const p = resolveInside(workdir, q.get("path"));
      const st = await lstatOrNull(p);
      if (!st) throw notFound(`no file ${q.get("path")}`);
      if (!st.isFile()) throw new HttpError("NOT_A_FILE", `${q.get("path")} is not a regular file`);
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": st.size });
      await pipeline(fs3.createReadStream(p, { highWaterMark: STREAM_CHUNK }), res);
      return;
    }
    if (method === "PUT") {
      const p = resolveInside(workdir, q.get("path"));
      const mode = parseMode(q.get("mode"));
      const st = await lstatOrNull(p);
      if (st?.isDirectory()) throw new HttpError("NOT_A_FILE", `${q.get("path")} is a directory`);
      const declared = Number(req.headers["content-length"] ?? "0");
      if (declared > limits.maxFileBytes) throw tooLarge(limits.maxFileBytes);
      await fsp.mkdir(path4.dirname(p), { recursive: true });
      resolveInside(workdir, q.get("path"));
      const tmp = path4.join(path4.dirname(p), `.${path4.basename(p)}.${randomBytes(6).toString("hex")}.tmp`);
      let size = 0;
      const counter = new Transform({
        transform(chunk, _enc, cb) {
          size += chunk.length;
          if (size > limits.maxFileBytes) cb(tooLarge(limits.maxFileBytes));
          else cb(null, chunk);
        }
      });
      const out = fs3.createWriteStream(tmp, { highWaterMark: STREAM_CHUNK, ...mode === void 0 ? {} : { mode } });
      try {
        if (req.headers["content-length"] !== void 0) {
          await pipeline(req, out);
          size = out.bytesWritten;
        } else {
          await pipeline(req, counter, out);
        }
        if (mode !== void 0) await fsp.chmod(tmp, mode);
        await fsp.rename(tmp, p);
      } catch (e) {
        await fsp.rm(tmp, { force: true });
        throw e;
      }
      sendJson(res, 200, { path: relative(workdir, p), size });
      return;
    }
    if (method === "DELETE") {
      const p = resolveInside(workdir, q.get("path"), false);
      if (p === fs3.realpathSync(workdir)) throw validation("the workdir itself cannot be deleted");
      const st = await lstatOrNull(p);
      if (!st) throw notFound(`no file ${q.get("path")}`);
      if (st.isDirectory()) {
        if (q.get("recursive") !== "true") throw new HttpError("NOT_A_FILE", `${q.get("path")} is a directory; pass recursive=true`);
        await fsp.rm(p, { recursive: true, force: true });
      } else {
        await fsp.unlink(p);
      }
      sendEmpty(res, 204);
      return;
    }
    throw methodNotAllowed();
  }
  if (op === "tree") {
    if (method !== "GET") throw methodNotAllowed();
    const rel = q.get("path") || ".";
    const root = rel === "." ? fs3.realpathSync(workdir) : resolveInside(workdir, rel);
    const depthRaw = q.get("depth") ?? "1";
    if (!/^\d+$/.test(depthRaw)) throw validation("depth must be a non-negative integer (0 = unlimited)");
    const depth = Number(depthRaw);
    const st = await lstatOrNull(root);
    if (!st) throw notFound(`no directory ${rel}`);
    if (!st.isDirectory()) throw new HttpError("NOT_A_DIRECTORY", `${rel} is not a directory`);
    const entries = [];
    const walk = async (dir, level) => {
      for (const name of await fsp.readdir(dir)) {
        const p = path4.join(dir, name);
        const s = await lstatOrNull(p);
        if (!s) continue;
        const type = s.isSymbolicLink() ? "symlink" : s.isDirectory() ? "dir" : "file";
        entries.push({ path: relative(workdir, p), type, size: s.size, mode: s.mode, mtimeMs: s.mtimeMs });
        if (type === "dir" && (depth === 0 || level < depth)) await walk(p, level + 1);
      }
    };
    await walk(root, 1);
    entries.sort((a, b) => a.path < b.path ? -1 : 1);
    sendJson(res, 200, { path: relative(workdir, root), entries });
    return;
  }
  if (method !== "POST") throw methodNotAllowed();
  const body = await readJsonObject(req, limits.maxJsonBytes);
  if (op === "edit") {
    const p = resolveInside(workdir, body.path);
    if (typeof body.oldString !== "string" || body.oldString === "") throw validation("oldString is required (a non-empty string)");
    if (typeof body.newString !== "string") throw validation("newString is required (a string)");
    const st = await lstatOrNull(p);
    if (!st) throw notFound(`no file ${body.path}`);
    if (!st.isFile()) throw new HttpError("NOT_A_FILE", `${body.path} is not a regular file`);
    const text = await fsp.readFile(p, "utf8");
    const count = text.split(body.oldString).length - 1;
    if (count === 0) throw new HttpError("EDIT_NO_MATCH", `oldString not found in ${body.path}`);
    if (count > 1 && body.replaceAll !== true) {
      throw new HttpError("EDIT_AMBIGUOUS", `oldString occurs ${count} times in ${body.path}; pass replaceAll or a longer oldString`);
    }
    await writeAtomic(p, text.split(body.oldString).join(body.newString), st.mode & 4095);
    sendJson(res, 200, { path: relative(workdir, p), replacements: count });
    return;
  }
  if (op === "mkdir") {
    const p = resolveInside(workdir, body.path);
    const st = await lstatOrNull(p);
    if (st && !st.isDirectory()) throw new HttpError("CONFLICT", `${body.path} exists and is not a directory`);
    if (st && body.recursive !== true) throw new HttpError("CONFLICT", `${body.path} already exists`);
    try {
      await fsp.mkdir(p, { recursive: body.recursive === true });
    } catch (e) {
      const code = e.code;
      if (code === "ENOENT") throw notFound(`the parent of ${body.path} does not exist; pass recursive`);
      if (code === "ENOTDIR" || code === "EEXIST") throw new HttpError("CONFLICT", `cannot create ${body.path}: a parent is a file`);
      throw e;
    }
    sendJson(res, 201, { path: relative(workdir, p) });
    return;
  }
  if (op === "move") {
    const from = resolveInside(workdir, body.from, false);
    const to = resolveInside(workdir, body.to, false);
    if (!await lstatOrNull(from)) throw notFound(`no file ${body.from}`);
    const existing = await lstatOrNull(to);
    if (existing && body.overwrite !== true) throw new HttpError("CONFLICT", `${body.to} exists; pass overwrite`);
    await fsp.mkdir(path4.dirname(to), { recursive: true });
    if (existing?.isDirectory()) await fsp.rm(to, { recursive: true, force: true });
    await fsp.rename(from, to);
    sendJson(res, 200, { from: relative(workdir, from), to: relative(workdir, to) });
    return;
  }
  throw notFound(`no route fs/${op}`);
}
async function writeFileSpec(workdir, f) {
  const p = resolveInside(workdir, f.path);
  await fsp.mkdir(path4.dirname(p), { recursive: true });
  resolveInside(workdir, f.path);
  const data = f.encoding === "base64" ? Buffer.from(f.content, "base64") : Buffer.from(f.content, "utf8");
  await writeAtomic(p, data, f.mode);
}
var STREAM_CHUNK;
var init_fsroutes = __esm({
  "src/fsroutes.ts"() {
    "use strict";
    init_errors();
    init_http();
    init_jail();
    init_validate();
    STREAM_CHUNK = 1 << 20;
  }
});

// src/main.ts
import fs4 from "node:fs";
import http from "node:http";
import net2 from "node:net";

// src/config.ts
import net from "node:net";
import path from "node:path";
function int(name, fallback) {
  const raw = process.env[name];
  if (raw === void 0 || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return n;
}
function loadConfig() {
  const env = process.env;
  const root = env.HARNESS_WORKDIR_ROOT;
  if (!root || !path.isAbsolute(root)) {
    throw new Error("HARNESS_WORKDIR_ROOT must be set to an absolute directory (where session workdirs live)");
  }
  const socket = env.HARNESS_SOCKET || void 0;
  const port = env.PORT !== void 0 && env.PORT !== "" ? int("PORT", 0) : void 0;
  if (!socket && port === void 0) throw new Error("set HARNESS_SOCKET (a Unix socket path) or PORT (TCP on 127.0.0.1)");
  if (port !== void 0 && port > 65535) throw new Error(`PORT must be 0\u201365535, got ${port}`);
  const host = env.HARNESS_HOST || "127.0.0.1";
  if (net.isIP(host) === 0) throw new Error(`HARNESS_HOST must be an IP address to listen on, got ${JSON.stringify(host)}`);
  return {
    socket,
    port,
    host,
    token: env.HARNESS_TOKEN || void 0,
    workdirRoot: root,
    nodeModules: env.HARNESS_NODE_MODULES || void 0,
    sessionIdleMs: int("HARNESS_SESSION_IDLE_MS", 18e5),
    permissionTimeoutMs: int("HARNESS_PERMISSION_TIMEOUT_MS", 6e5),
    maxJsonBytes: int("HARNESS_MAX_JSON_BYTES", 8 * 1024 * 1024),
    maxFileBytes: int("HARNESS_MAX_FILE_BYTES", 1024 * 1024 * 1024),
    eventRing: Math.max(1, int("HARNESS_EVENT_RING", 1e4))
  };
}

// src/engines/claude-agent-sdk.ts
init_errors();
import fs from "node:fs";
import path2 from "node:path";
import { pathToFileURL } from "node:url";
var PACKAGE = "@anthropic-ai/claude-agent-sdk";
var loaded;
function loadSdk(nodeModules) {
  loaded ??= (async () => {
    let target = PACKAGE;
    if (nodeModules) {
      const dir = path2.join(nodeModules, PACKAGE);
      const pkgPath = path2.join(dir, "package.json");
      let entry = "sdk.mjs";
      try {
        const pkg = JSON.parse(fs.readFileSync(pkgPath, "utf8"));
        entry = pkg.exports?.["."]?.default ?? pkg.main ?? entry;
      } catch (e) {
        throw new HttpError("ENGINE_UNAVAILABLE", `cannot read ${pkgPath}: ${e.message}; stage node_modules (cargo xtask stage)`);
      }
      target = pathToFileURL(path2.join(dir, entry)).href;
    }
    try {
      return await import(target);
    } catch (e) {
      throw new HttpError("ENGINE_UNAVAILABLE", `cannot import ${target}: ${e.message}`);
    }
  })();
  loaded.catch(() => {
    loaded = void 0;
  });
  return loaded;
}
function toSdkUser(message) {
  const content = typeof message === "string" ? message : message.content;
  return { type: "user", message: { role: "user", content }, parent_tool_use_id: null, session_id: "" };
}
function usageOf(result, previous) {
  const models = result.modelUsage;
  const cost = typeof result.total_cost_usd === "number" ? result.total_cost_usd : previous.totalCostUsd;
  if (models && Object.keys(models).length > 0) {
    const sum = (k) => Object.values(models).reduce((a, m) => a + (Number(m[k]) || 0), 0);
    return {
      inputTokens: sum("inputTokens"),
      outputTokens: sum("outputTokens"),
      cacheReadInputTokens: sum("cacheReadInputTokens"),
      cacheCreationInputTokens: sum("cacheCreationInputTokens"),
      totalCostUsd: cost
    };
  }
  const u = result.usage ?? {};
  return {
    inputTokens: previous.inputTokens + (Number(u.input_tokens) || 0),
    outputTokens: previous.outputTokens + (Number(u.output_tokens) || 0),
    cacheReadInputTokens: previous.cacheReadInputTokens + (Number(u.cache_read_input_tokens) || 0),
    cacheCreationInputTokens: previous.cacheCreationInputTokens + (Number(u.cache_creation_input_tokens) || 0),
    totalCostUsd: cost
  };
}
function claudeAgentSdk(nodeModules) {
  return {
    name: "claude-agent-sdk",
    capabilities: { streamingInput: true, partialMessages: true, permissionCallback: true, sessions: true, budget: true },
    async run(host, onInterrupt) {
      const sdk = await loadSdk(nodeModules);
      let turnDone;
      let finished = false;
      async function* prompt() {
        for (; ; ) {
          const message = await host.nextMessage();
          if (message === null || finished) return;
          const done = new Promise((resolve) => {
            turnDone = resolve;
          });
          yield toSdkUser(message);
          await done;
        }
      }
      const o = host.options;
      const abortController = new AbortController();
      host.abortSignal.addEventListener("abort", () => abortController.abort(), { once: true });
      const options2 = {
        cwd: host.workdir,
        env: host.env,
        abortController,
        stderr: (line) => host.log("debug", "engine stderr", { line: line.slice(0, 2e3) }),
        canUseTool: async (toolName, input, ctx) => {
          const d = await host.askPermission(toolName, input, ctx?.toolUseID, ctx.signal);
          if (d.decision === "allow") return { behavior: "allow", updatedInput: input };
          if (d.decision === "modify") return { behavior: "allow", updatedInput: d.input };
          return { behavior: "deny", message: d.reason };
        }
      };
      if (o.model) options2.model = o.model;
      if (o.systemPrompt) options2.systemPrompt = o.systemPrompt;
      else if (o.appendSystemPrompt) options2.systemPrompt = { type: "preset", preset: "claude_code", append: o.appendSystemPrompt };
      if (o.maxTurns !== void 0) options2.maxTurns = o.maxTurns;
      if (o.maxBudgetUsd !== void 0) options2.maxBudgetUsd = o.maxBudgetUsd;
      if (o.permissionMode) options2.permissionMode = o.permissionMode;
      if (o.allowedTools) options2.allowedTools = o.allowedTools;
      if (o.disallowedTools) options2.disallowedTools = o.disallowedTools;
      if (o.includePartialMessages !== void 0) options2.includePartialMessages = o.includePartialMessages;
      if (o.resume) options2.resume = o.resume;
      if (o.extra) Object.assign(options2, o.extra);
      const q = sdk.query({ prompt: prompt(), options: options2 });
      onInterrupt(async () => {
        try {
          await q.interrupt?.();
        } catch {
        }
      });
      let usage = { inputTokens: 0, outputTokens: 0, cacheReadInputTokens: 0, cacheCreationInputTokens: 0, totalCostUsd: 0 };
      try {
        for await (const message of q) {
          host.sdkMessage(message);
          if (message.type === "result") {
            usage = usageOf(message, usage);
            const budget = message.subtype === "error_max_budget_usd";
            host.turnEnded(usage, budget);
            if (budget) finished = true;
            turnDone?.();
          }
        }
      } finally {
        finished = true;
        turnDone?.();
      }
    }
  };
}

// src/log.ts
var order = { debug: 10, info: 20, warn: 30, error: 40 };
var threshold = order[process.env.HARNESS_LOG_LEVEL ?? "info"] ?? order.info;
function log(level, msg, fields = {}) {
  if (order[level] < threshold) return;
  process.stderr.write(JSON.stringify({ ts: (/* @__PURE__ */ new Date()).toISOString(), level, msg, ...fields }) + "\n");
}

// src/server.ts
init_errors();
init_http();
init_fsroutes();
import { randomBytes as randomBytes3 } from "node:crypto";
import fsp4 from "node:fs/promises";
import path6 from "node:path";

// src/session.ts
init_errors();
import { randomBytes as randomBytes2 } from "node:crypto";
import fsp2 from "node:fs/promises";

// src/events.ts
var EventLog = class {
  constructor(sessionId, capacity) {
    this.sessionId = sessionId;
    this.capacity = capacity;
  }
  sessionId;
  capacity;
  ring = [];
  nextId = 0;
  subscribers = /* @__PURE__ */ new Set();
  closed = false;
  get lastId() {
    return this.nextId === 0 ? null : this.nextId - 1;
  }
  get subscriberCount() {
    return this.subscribers.size;
  }
  get isClosed() {
    return this.closed;
  }
  /** The oldest id still replayable. */
  get firstId() {
    return this.ring.length ? this.ring[0].id : this.nextId;
  }
  emit(type, fields) {
    if (this.closed) return;
    const id = this.nextId++;
    const data = { type, id, ts: (/* @__PURE__ */ new Date()).toISOString(), sessionId: this.sessionId, ...fields };
    const frame = `event: ${type}
id: ${id}
data: ${JSON.stringify(data)}

`;
    this.ring.push({ id, frame });
    if (this.ring.length > this.capacity) this.ring.shift();
    for (const res of this.subscribers) res.write(frame);
  }
  /** Writes every event after `after` to `res`, then keeps it live unless the log is closed. */
  subscribe(res, after, onClose) {
    for (const e of this.ring) if (after === null || e.id > after) res.write(e.frame);
    if (this.closed) {
      res.end();
      return;
    }
    this.subscribers.add(res);
    const ping = setInterval(() => res.write(": ping\n\n"), 15e3);
    res.on("close", () => {
      clearInterval(ping);
      this.subscribers.delete(res);
      onClose();
    });
  }
  /** After the last event: ends every stream. */
  close() {
    this.closed = true;
    for (const res of this.subscribers) res.end();
    this.subscribers.clear();
  }
};

// src/session.ts
var Session = class {
  constructor(sessionId, engine, workdir, home, env, options2, identity, messages, streamingInput, ringSize, permissionTimeoutMs) {
    this.sessionId = sessionId;
    this.engine = engine;
    this.workdir = workdir;
    this.home = home;
    this.env = env;
    this.options = options2;
    this.identity = identity;
    this.permissionTimeoutMs = permissionTimeoutMs;
    this.events = new EventLog(sessionId, ringSize);
    this.queue = [...messages];
    this.inputEnded = !streamingInput;
    this.ended = new Promise((resolve) => {
      this.markEnded = resolve;
    });
  }
  sessionId;
  engine;
  workdir;
  home;
  env;
  options;
  identity;
  permissionTimeoutMs;
  state = "created";
  turns = 0;
  endReason = null;
  lastActivity = Date.now();
  createdAt = (/* @__PURE__ */ new Date()).toISOString();
  events;
  queue = [];
  inputEnded;
  waiter = null;
  pending = /* @__PURE__ */ new Map();
  decided = /* @__PURE__ */ new Set();
  abort = new AbortController();
  interruptFn = null;
  usage = { inputTokens: 0, outputTokens: 0, cacheReadInputTokens: 0, cacheCreationInputTokens: 0, totalCostUsd: 0 };
  budgetExceeded = false;
  cancelled = false;
  ended;
  markEnded;
  get abortSignal() {
    return this.abort.signal;
  }
  whenEnded() {
    return this.ended;
  }
  info() {
    return {
      sessionId: this.sessionId,
      engine: this.engine.name,
      state: this.state,
      createdAt: this.createdAt,
      turns: this.turns,
      lastEventId: this.events.lastId,
      endReason: this.endReason,
      identity: this.identity,
      workdir: this.workdir
    };
  }
  // --- input -------------------------------------------------------------------------------
  enqueue(message) {
    if (this.state === "ended") throw new HttpError("SESSION_ENDED", `session ${this.sessionId} has ended (${this.endReason})`);
    if (this.inputEnded) throw new HttpError("INPUT_ENDED", `input of session ${this.sessionId} has ended`);
    this.touch();
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(message);
      return 1;
    }
    this.queue.push(message);
    return this.queue.length;
  }
  endInput() {
    if (this.state === "ended") throw new HttpError("SESSION_ENDED", `session ${this.sessionId} has ended (${this.endReason})`);
    this.inputEnded = true;
    this.touch();
    if (this.waiter && this.queue.length === 0) {
      const w = this.waiter;
      this.waiter = null;
      w(null);
    }
  }
  nextMessage() {
    const handOut = (m) => {
      if (m !== null && !this.cancelled) {
        this.turns += 1;
        this.state = "running";
        this.events.emit("ca_turn_started", { turn: this.turns, message: m });
      }
      return this.cancelled ? null : m;
    };
    if (this.cancelled) return Promise.resolve(null);
    const next = this.queue.shift();
    if (next !== void 0) return Promise.resolve(handOut(next));
    if (this.inputEnded) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.waiter = (m) => resolve(handOut(m));
    });
  }
  // --- engine callbacks --------------------------------------------------------------------
  sdkMessage(message) {
    this.touch();
    this.events.emit("sdk_message", { message });
  }
  turnEnded(usage, budgetExceeded) {
    this.usage = usage;
    this.events.emit("ca_usage_snapshot", { turn: this.turns, usage });
    if (this.state === "running") this.state = "idle";
    if (budgetExceeded) {
      this.budgetExceeded = true;
      this.inputEnded = true;
      this.queue = [];
    }
  }
  askPermission(toolName, input, toolUseId, signal) {
    const callId = `call_${randomBytes2(9).toString("base64url")}`;
    this.events.emit("ca_permission_request", { callId, toolName, input, ...toolUseId ? { toolUseId } : {} });
    return new Promise((resolve) => {
      let timer;
      const settle = (d, by) => {
        if (!this.pending.delete(callId)) return;
        this.decided.add(callId);
        if (timer) clearTimeout(timer);
        const reason = d.decision === "deny" ? d.reason : void 0;
        this.events.emit("ca_permission_decision", { callId, decision: d.decision, ...reason ? { reason } : {}, by });
        resolve(d);
      };
      this.pending.set(callId, { settle });
      timer = setTimeout(() => settle({ decision: "deny", reason: "no permission decision in time" }, "timeout"), this.permissionTimeoutMs);
      timer.unref();
      signal?.addEventListener("abort", () => settle({ decision: "deny", reason: "cancelled" }, "cancel"), { once: true });
    });
  }
  decide(callId, decision) {
    if (this.decided.has(callId)) throw new HttpError("CONFLICT", `permission ${callId} was already decided`);
    const call = this.pending.get(callId);
    if (!call) throw new HttpError("NOT_FOUND", `no pending permission ${callId}`);
    this.touch();
    call.settle(decision, "client");
  }
  log(level, msg, fields = {}) {
    log(level, msg, { sessionId: this.sessionId, ...fields });
  }
  // --- lifecycle ---------------------------------------------------------------------------
  /** Starts the engine (the first subscriber does this). */
  start() {
    if (this.state !== "created") return;
    this.state = "idle";
    this.events.emit("ca_session_started", { engine: this.engine.name, workdir: this.workdir });
    this.engine.run(this, (fn) => {
      this.interruptFn = fn;
    }).then(() => this.end(this.cancelled ? "cancelled" : this.budgetExceeded ? "budget_exceeded" : "complete")).catch((e) => {
      if (this.cancelled) return this.end("cancelled");
      const code = e instanceof HttpError ? e.code : "ENGINE_FAILED";
      const message = e instanceof Error ? e.message : String(e);
      this.log("error", "engine failed", { error: message });
      this.end(this.budgetExceeded ? "budget_exceeded" : "error", { code, message });
    });
  }
  /** Interrupts the engine; the session ends `cancelled`. */
  async cancel() {
    if (this.state === "ended") return;
    this.cancelled = true;
    this.inputEnded = true;
    this.queue = [];
    for (const call of [...this.pending.values()]) call.settle({ decision: "deny", reason: "cancelled" }, "cancel");
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(null);
    }
    if (this.state === "created") {
      this.events.emit("ca_session_started", { engine: this.engine.name, workdir: this.workdir });
      this.end("cancelled");
      return;
    }
    const interrupt = this.interruptFn;
    if (interrupt) await Promise.race([interrupt(), new Promise((r) => setTimeout(r, 2e3))]);
    this.abort.abort();
    const force = setTimeout(() => this.end("cancelled"), 5e3);
    force.unref();
  }
  end(reason, error) {
    if (this.state === "ended") return;
    this.state = "ended";
    this.endReason = reason;
    this.touch();
    for (const call of [...this.pending.values()]) call.settle({ decision: "deny", reason: "session ended" }, "cancel");
    this.events.emit("ca_session_ended", { reason, ...error ? { error } : {}, usage: this.usage });
    this.events.close();
    this.abort.abort();
    this.markEnded();
  }
  touch() {
    this.lastActivity = Date.now();
  }
  /** Cancels and removes every file of the session. */
  async destroy() {
    await this.cancel();
    this.events.close();
    await fsp2.rm(this.workdir, { recursive: true, force: true });
    await fsp2.rm(this.home, { recursive: true, force: true });
  }
};

// src/sources.ts
init_errors();
init_fsroutes();
import { execFile } from "node:child_process";
import fsp3 from "node:fs/promises";
import path5 from "node:path";
function git(args, cwd) {
  return new Promise((resolve, reject) => {
    execFile("git", args, { cwd, timeout: 3e5, env: { ...process.env, GIT_TERMINAL_PROMPT: "0" }, maxBuffer: 1 << 20 }, (err, _out, stderr) => {
      if (err) reject(validation(`git ${args[0]} failed: ${(stderr || err.message).toString().trim().slice(-2e3)}`));
      else resolve();
    });
  });
}
async function materialise(workdir, source2) {
  if (!source2) return;
  switch (source2.type) {
    case "files":
      for (const f of source2.files) await writeFileSpec(workdir, f);
      return;
    case "git": {
      const args = ["clone", "--depth", "1", "--quiet"];
      if (source2.ref) args.push("--branch", source2.ref);
      args.push("--", source2.url, workdir);
      await git(args, path5.dirname(workdir));
      return;
    }
    case "dir": {
      if (!path5.isAbsolute(source2.path)) throw validation("source.path must be absolute");
      const st = await fsp3.stat(source2.path).catch(() => null);
      if (!st?.isDirectory()) throw validation(`source.path ${source2.path} is not a directory visible to the harness`);
      await fsp3.cp(source2.path, workdir, { recursive: true, verbatimSymlinks: true });
      return;
    }
  }
}

// src/server.ts
init_validate();
var VERSION = "0.1.0";
var Harness = class {
  constructor(config, engines) {
    this.config = config;
    this.engines = engines;
  }
  config;
  engines;
  sessions = /* @__PURE__ */ new Map();
  async handle(req, res) {
    const url = new URL(req.url ?? "/", "http://harness");
    const method = req.method ?? "GET";
    const parts = url.pathname.split("/").filter(Boolean);
    try {
      if (method === "GET" && url.pathname === "/v1/health") return this.health(res);
      if (!authorized(req, this.config.token)) throw new HttpError("UNAUTHORIZED", "missing or wrong bearer token");
      if (parts[0] !== "v1") throw notFound(`no route ${url.pathname}`);
      await this.route(method, parts.slice(1), req, res, url);
    } catch (e) {
      const err = e instanceof HttpError ? e : internal(e, method, url.pathname);
      sendError(res, err);
    }
  }
  health(res) {
    const engines = {};
    for (const [name, engine] of this.engines) engines[name] = engine.capabilities;
    sendJson(res, 200, { ok: true, version: VERSION, protocol: 1, engines });
  }
  async route(method, p, req, res, url) {
    const allow = (...methods) => {
      if (!methods.includes(method)) throw new HttpError("METHOD_NOT_ALLOWED", `${method} is not allowed here`);
    };
    if (p[0] === "health" && p.length === 1) return allow("GET");
    if (p[0] === "chat" && p.length === 1) {
      allow("POST");
      return this.chat(req, res);
    }
    if (p[0] !== "sessions") throw notFound(`no route /v1/${p.join("/")}`);
    if (p.length === 1) {
      allow("POST");
      const created = await this.create(await readJsonObject(req, this.config.maxJsonBytes), false);
      return sendJson(res, 201, created.answer);
    }
    const session = this.sessions.get(p[1]);
    if (!session) throw notFound(`no session ${p[1]}`);
    if (p.length === 2) {
      allow("GET", "DELETE");
      if (method === "GET") return sendJson(res, 200, session.info());
      await this.remove(session);
      return sendEmpty(res, 204);
    }
    const action = p[2];
    if (action === "fs" && p.length === 4) {
      session.touch();
      return handleFs(p[3], req, res, url, session.workdir, this.config);
    }
    if (action === "events" && p.length === 3) {
      allow("GET");
      return this.subscribe(session, req, res, url);
    }
    if (action === "permission" && p.length === 4) {
      allow("POST");
      const body2 = await readJsonObject(req, this.config.maxJsonBytes);
      return this.permission(session, p[3], body2, res);
    }
    if (p.length !== 3) throw notFound(`no route /v1/${p.join("/")}`);
    allow("POST");
    const body = await readJsonObject(req, this.config.maxJsonBytes);
    switch (action) {
      case "messages": {
        const queued = session.enqueue(userMessage(body.message, "message"));
        return sendJson(res, 202, { queued });
      }
      case "end-input":
        session.endInput();
        return sendJson(res, 202, {});
      case "cancel":
        await session.cancel();
        return sendJson(res, 202, {});
      default:
        throw notFound(`no route /v1/${p.join("/")}`);
    }
  }
  async create(o, forChat) {
    const body = createSessionBody(o);
    const engine = this.engines.get(body.engine);
    if (!engine) {
      throw new HttpError("UNKNOWN_ENGINE", `no engine ${JSON.stringify(body.engine)}`, { available: [...this.engines.keys()] });
    }
    const id = body.sessionId ?? `sess_${randomBytes3(12).toString("base64url")}`;
    if (this.sessions.has(id)) throw new HttpError("CONFLICT", `session ${id} already exists`);
    const workdir = path6.join(this.config.workdirRoot, id);
    const home = path6.join(this.config.workdirRoot, ".home", id);
    const messages = [...body.messages];
    if (forChat) messages.push(userMessage(o.message, "message"));
    try {
      await fsp4.mkdir(workdir, { recursive: false, mode: 448 });
    } catch (e) {
      if (e.code === "EEXIST") throw new HttpError("CONFLICT", `workdir of ${id} already exists`);
      throw e;
    }
    try {
      await fsp4.mkdir(home, { recursive: true, mode: 448 });
      await materialise(workdir, body.source);
      const { writeFileSpec: writeFileSpec2 } = await Promise.resolve().then(() => (init_fsroutes(), fsroutes_exports));
      for (const a of body.attachments) await writeFileSpec2(workdir, a);
    } catch (e) {
      await fsp4.rm(workdir, { recursive: true, force: true });
      await fsp4.rm(home, { recursive: true, force: true });
      throw e;
    }
    const env = engineEnv(body.envs, home);
    const session = new Session(
      id,
      engine,
      workdir,
      home,
      env,
      body.options,
      body.identity,
      messages,
      forChat ? false : body.streamingInput,
      this.config.eventRing,
      this.config.permissionTimeoutMs
    );
    this.sessions.set(id, session);
    log("info", "session created", { sessionId: id, engine: engine.name });
    return { session, answer: { sessionId: id, engine: engine.name, capabilities: engine.capabilities, eventsUrl: `/v1/sessions/${id}/events`, workdir } };
  }
  subscribe(session, req, res, url) {
    const raw = req.headers["last-event-id"] ?? url.searchParams.get("lastEventId") ?? void 0;
    let after = null;
    if (raw !== void 0 && raw !== "") {
      if (!/^\d+$/.test(raw.trim())) throw validation("Last-Event-ID must be a non-negative integer");
      after = Number(raw.trim());
      if (after + 1 < session.events.firstId) {
        throw new HttpError("EVENTS_EXPIRED", `events after ${after} are no longer kept (oldest is ${session.events.firstId})`);
      }
    }
    openSse(res);
    session.touch();
    session.events.subscribe(res, after, () => session.touch());
    session.start();
  }
  permission(session, callId, body, res) {
    let decision;
    switch (body.decision) {
      case "allow":
        decision = { decision: "allow" };
        break;
      case "deny":
        decision = { decision: "deny", reason: typeof body.reason === "string" && body.reason ? body.reason : "denied by the client" };
        break;
      case "modify":
        if (!isObj(body.input)) throw validation("modify needs input: the tool input to use instead (an object)");
        decision = { decision: "modify", input: body.input };
        break;
      default:
        throw validation('decision must be "allow", "deny" or "modify"');
    }
    if (body.reason !== void 0 && typeof body.reason !== "string") throw validation("reason must be a string");
    session.decide(callId, decision);
    sendJson(res, 200, {});
  }
  async chat(req, res) {
    const o = await readJsonObject(req, this.config.maxJsonBytes);
    if (o.message === void 0) throw validation("message is required");
    if (o.keep !== void 0 && typeof o.keep !== "boolean") throw validation("keep must be true or false");
    const { session } = await this.create(o, true);
    openSse(res);
    session.events.subscribe(res, null, () => {
      if (session.state !== "ended" && o.keep !== true) void this.remove(session);
    });
    session.start();
    await session.whenEnded();
    if (o.keep !== true) await this.remove(session);
  }
  async remove(session) {
    if (this.sessions.get(session.sessionId) !== session) return;
    this.sessions.delete(session.sessionId);
    await session.destroy();
    log("info", "session deleted", { sessionId: session.sessionId });
  }
  /** Deletes sessions that are not running and have had no subscriber for the idle time. */
  reapIdle() {
    const now = Date.now();
    for (const s of this.sessions.values()) {
      if (s.state !== "running" && s.events.subscriberCount === 0 && now - s.lastActivity > this.config.sessionIdleMs) {
        log("info", "reaping idle session", { sessionId: s.sessionId });
        void this.remove(s);
      }
    }
  }
  async shutdown() {
    await Promise.all([...this.sessions.values()].map((s) => s.cancel()));
  }
};
function openSse(res) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
  res.flushHeaders();
}
function internal(e, method, pathname) {
  const code = e?.code;
  if (code === "ENOENT") return notFound(e.message);
  log("error", "request failed", { method, path: pathname, error: e instanceof Error ? e.stack : String(e) });
  return new HttpError("INTERNAL", `internal error: ${e instanceof Error ? e.message : String(e)}`);
}
function engineEnv(envs, home) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === void 0 || k.startsWith("HARNESS_") || k === "PORT") continue;
    env[k] = v;
  }
  Object.assign(env, envs);
  if (!("HOME" in envs)) env.HOME = home;
  return env;
}

// src/main.ts
process.on("unhandledRejection", (e) => log("error", "unhandled rejection", { error: e instanceof Error ? e.stack : String(e) }));
process.on("uncaughtException", (e) => log("error", "uncaught exception", { error: e.stack ?? String(e) }));
function loadEnvFd() {
  const raw = process.env.HARNESS_ENV_FD;
  if (raw === void 0 || raw === "") return;
  delete process.env.HARNESS_ENV_FD;
  if (!/^\d+$/.test(raw)) throw new Error(`HARNESS_ENV_FD must be a file descriptor number, got ${JSON.stringify(raw)}`);
  const fd = Number(raw);
  let text;
  try {
    text = fs4.readFileSync(fd, "utf8");
  } finally {
    try {
      fs4.closeSync(fd);
    } catch {
    }
  }
  const vars = JSON.parse(text);
  if (typeof vars !== "object" || vars === null || Array.isArray(vars)) throw new Error("HARNESS_ENV_FD must carry a JSON object");
  for (const [k, v] of Object.entries(vars)) {
    if (typeof v !== "string") throw new Error(`HARNESS_ENV_FD: the value of ${k} must be a string`);
    process.env[k] = v;
  }
}
function parseRelays(raw) {
  return raw.split(",").filter((pair) => pair.trim() !== "").map((pair) => {
    const eq = pair.indexOf("=");
    const port = Number(pair.slice(0, eq));
    const socket = pair.slice(eq + 1);
    if (eq < 1 || !Number.isInteger(port) || port < 1 || port > 65535 || !socket.startsWith("/")) {
      throw new Error(
        `HARNESS_RELAYS must be comma-separated PORT=/absolute/socket pairs, got ${JSON.stringify(pair)}`
      );
    }
    return { port, socket };
  });
}
function startRelays() {
  for (const { port, socket } of parseRelays(process.env.HARNESS_RELAYS ?? "")) {
    const relay = net2.createServer({ allowHalfOpen: true }, (inbound) => {
      inbound.setNoDelay(true);
      const outbound = net2.connect({ path: socket, allowHalfOpen: true });
      inbound.on("error", () => outbound.end());
      outbound.on("error", () => inbound.end());
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
    relay.on("error", (e) => {
      log("error", "relay failed", { port, socket, error: e.message });
      process.exit(1);
    });
    relay.listen(port, "127.0.0.1", () => log("info", "relay listening", { port, socket }));
  }
}
function main() {
  let config;
  try {
    loadEnvFd();
    config = loadConfig();
  } catch (e) {
    log("error", e.message);
    process.exit(2);
  }
  fs4.mkdirSync(config.workdirRoot, { recursive: true, mode: 448 });
  if (!config.token) log("warn", "HARNESS_TOKEN is not set: every route is open (tests only)");
  const engines = /* @__PURE__ */ new Map();
  const sdk = claudeAgentSdk(config.nodeModules);
  engines.set(sdk.name, sdk);
  const harness = new Harness(config, engines);
  try {
    startRelays();
  } catch (e) {
    log("error", e.message);
    process.exit(2);
  }
  const server = http.createServer((req, res) => void harness.handle(req, res));
  server.requestTimeout = 0;
  server.headersTimeout = 6e4;
  server.keepAliveTimeout = 3e4;
  const reaper = setInterval(() => harness.reapIdle(), Math.min(6e4, Math.max(1e3, config.sessionIdleMs / 2)));
  reaper.unref();
  const cfg = config;
  const onListening = () => {
    if (cfg.socket) {
      fs4.chmodSync(cfg.socket, 384);
      log("info", "listening", { socket: cfg.socket, version: VERSION });
    } else {
      const addr = server.address();
      log("info", "listening", { host: cfg.host, port: typeof addr === "object" && addr ? addr.port : cfg.port, version: VERSION });
    }
  };
  if (config.socket) {
    try {
      fs4.unlinkSync(config.socket);
    } catch {
    }
    server.listen(config.socket, onListening);
  } else {
    server.listen(config.port, config.host, onListening);
  }
  server.on("error", (e) => {
    log("error", "server error", { error: e.message });
    process.exit(1);
  });
  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    log("info", "stopping", { signal });
    server.close();
    server.closeAllConnections?.();
    const done = () => {
      if (cfg.socket) fs4.rmSync(cfg.socket, { force: true });
      process.exit(0);
    };
    harness.shutdown().finally(done);
    setTimeout(done, 2e3).unref();
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}
main();
