// Entry point: configuration from the environment, the HTTP server, signals.
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import { loadConfig } from "./config.js";
import { claudeAgentSdk } from "./engines/claude-agent-sdk.js";
import type { Engine } from "./engines/engine.js";
import { log } from "./log.js";
import { Harness, VERSION } from "./server.js";

process.on("unhandledRejection", (e) => log("error", "unhandled rejection", { error: e instanceof Error ? e.stack : String(e) }));
process.on("uncaughtException", (e) => log("error", "uncaught exception", { error: e.stack ?? String(e) }));

/**
 * Reads further environment variables, as one JSON object of strings, from the file descriptor
 * named by HARNESS_ENV_FD, then closes it. Runtimes deliver secrets (the boot token, engine
 * keys) this way so that they appear in no argv and in no /proc/PID/environ of the sandbox.
 */
function loadEnvFd(): void {
  const raw = process.env.HARNESS_ENV_FD;
  if (raw === undefined || raw === "") return;
  delete process.env.HARNESS_ENV_FD;
  if (!/^\d+$/.test(raw)) throw new Error(`HARNESS_ENV_FD must be a file descriptor number, got ${JSON.stringify(raw)}`);
  const fd = Number(raw);
  let text: string;
  try {
    text = fs.readFileSync(fd, "utf8");
  } finally {
    try {
      fs.closeSync(fd);
    } catch {
      // Already closed.
    }
  }
  const vars: unknown = JSON.parse(text);
  if (typeof vars !== "object" || vars === null || Array.isArray(vars)) throw new Error("HARNESS_ENV_FD must carry a JSON object");
  for (const [k, v] of Object.entries(vars)) {
    if (typeof v !== "string") throw new Error(`HARNESS_ENV_FD: the value of ${k} must be a string`);
    process.env[k] = v;
  }
}

/**
 * The in-sandbox ends of host services: for each `PORT=SOCKET` pair of HARNESS_RELAYS
 * (comma-separated), a TCP listener on 127.0.0.1:PORT that pipes every connection to the Unix
 * socket SOCKET, which the runtime bound in from the host. The egress proxy of the `allow`
 * network policy (what HTTP(S)_PROXY point at) and the credential broker (what
 * ANTHROPIC_BASE_URL points at) are reached this way; the sandbox itself has no route out.
 */
function parseRelays(raw: string): Array<{ port: number; socket: string }> {
  return raw
    .split(",")
    .filter((pair) => pair.trim() !== "")
    .map((pair) => {
      const eq = pair.indexOf("=");
      const port = Number(pair.slice(0, eq));
      const socket = pair.slice(eq + 1);
      if (eq < 1 || !Number.isInteger(port) || port < 1 || port > 65535 || !socket.startsWith("/")) {
        throw new Error(
          `HARNESS_RELAYS must be comma-separated PORT=/absolute/socket pairs, got ${JSON.stringify(pair)}`,
        );
      }
      return { port, socket };
    });
}

function startRelays(): void {
  for (const { port, socket } of parseRelays(process.env.HARNESS_RELAYS ?? "")) {
    // Half-open both ways: an end is passed on with `end()` after every byte before it is
    // written, never with `destroy()`, which would drop a reply still queued (a 403 the proxy
    // sent just before closing).
    const relay = net.createServer({ allowHalfOpen: true }, (inbound) => {
      inbound.setNoDelay(true);
      const outbound = net.connect({ path: socket, allowHalfOpen: true });
      // An error on one side (a reset) ends the other gracefully, after what was already
      // read from the failed side is written.
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

function main(): void {
  let config;
  try {
    loadEnvFd();
    config = loadConfig();
  } catch (e) {
    log("error", (e as Error).message);
    process.exit(2);
  }
  fs.mkdirSync(config.workdirRoot, { recursive: true, mode: 0o700 });
  if (!config.token) log("warn", "HARNESS_TOKEN is not set: every route is open (tests only)");
  const engines = new Map<string, Engine>();
  const sdk = claudeAgentSdk(config.nodeModules);
  engines.set(sdk.name, sdk);
  const harness = new Harness(config, engines);
  try {
    startRelays();
  } catch (e) {
    log("error", (e as Error).message);
    process.exit(2);
  }

  const server = http.createServer((req, res) => void harness.handle(req, res));
  server.requestTimeout = 0; // event streams and large uploads are long-lived
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 30_000;

  const reaper = setInterval(() => harness.reapIdle(), Math.min(60_000, Math.max(1000, config.sessionIdleMs / 2)));
  reaper.unref();

  const cfg = config;
  const onListening = () => {
    if (cfg.socket) {
      fs.chmodSync(cfg.socket, 0o600);
      log("info", "listening", { socket: cfg.socket, version: VERSION });
    } else {
      const addr = server.address();
      log("info", "listening", { host: cfg.host, port: typeof addr === "object" && addr ? addr.port : cfg.port, version: VERSION });
    }
  };
  if (config.socket) {
    try {
      fs.unlinkSync(config.socket);
    } catch {
      // Nothing to replace.
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
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log("info", "stopping", { signal });
    server.close();
    server.closeAllConnections?.();
    const done = () => {
      if (cfg.socket) fs.rmSync(cfg.socket, { force: true });
      process.exit(0);
    };
    harness.shutdown().finally(done);
    setTimeout(done, 2000).unref();
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

main();
