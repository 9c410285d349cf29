// The harness is configured by its environment only (see docs/protocol-v1.md).
import net from "node:net";
import path from "node:path";

export interface Config {
  socket?: string;
  port?: number;
  host: string;
  token?: string;
  workdirRoot: string;
  nodeModules?: string;
  sessionIdleMs: number;
  permissionTimeoutMs: number;
  maxJsonBytes: number;
  maxFileBytes: number;
  eventRing: number;
}

function int(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return n;
}

export function loadConfig(): Config {
  const env = process.env;
  const root = env.HARNESS_WORKDIR_ROOT;
  if (!root || !path.isAbsolute(root)) {
    throw new Error("HARNESS_WORKDIR_ROOT must be set to an absolute directory (where session workdirs live)");
  }
  const socket = env.HARNESS_SOCKET || undefined;
  const port = env.PORT !== undefined && env.PORT !== "" ? int("PORT", 0) : undefined;
  if (!socket && port === undefined) throw new Error("set HARNESS_SOCKET (a Unix socket path) or PORT (TCP on 127.0.0.1)");
  if (port !== undefined && port > 65535) throw new Error(`PORT must be 0–65535, got ${port}`);
  const host = env.HARNESS_HOST || "127.0.0.1";
  if (net.isIP(host) === 0) throw new Error(`HARNESS_HOST must be an IP address to listen on, got ${JSON.stringify(host)}`);
  return {
    socket,
    port,
    host,
    token: env.HARNESS_TOKEN || undefined,
    workdirRoot: root,
    nodeModules: env.HARNESS_NODE_MODULES || undefined,
    sessionIdleMs: int("HARNESS_SESSION_IDLE_MS", 1_800_000),
    permissionTimeoutMs: int("HARNESS_PERMISSION_TIMEOUT_MS", 600_000),
    maxJsonBytes: int("HARNESS_MAX_JSON_BYTES", 8 * 1024 * 1024),
    maxFileBytes: int("HARNESS_MAX_FILE_BYTES", 1024 * 1024 * 1024),
    eventRing: Math.max(1, int("HARNESS_EVENT_RING", 10_000)),
  };
}
