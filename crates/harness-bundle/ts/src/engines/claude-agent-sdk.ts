// The claude-agent-sdk engine: drives @anthropic-ai/claude-agent-sdk's query() with streaming
// input, one turn at a time, and maps its permission callback to the protocol.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { HttpError } from "../errors.js";
import type { Engine, EngineHost, Usage } from "./engine.js";
import type { UserMessage } from "../validate.js";

const PACKAGE = "@anthropic-ai/claude-agent-sdk";

type Query = AsyncIterable<Record<string, unknown>> & { interrupt?: () => Promise<unknown> };
interface Sdk { query(args: { prompt: AsyncIterable<unknown>; options: Record<string, unknown> }): Query }

let loaded: Promise<Sdk> | undefined;

/** Imports the SDK once, from HARNESS_NODE_MODULES when set, else next to the harness. */
function loadSdk(nodeModules: string | undefined): Promise<Sdk> {
  loaded ??= (async () => {
    let target: string = PACKAGE;
    if (nodeModules) {
      const dir = path.join(nodeModules, PACKAGE);
      const pkgPath = path.join(dir, "package.json");
      let entry = "sdk.mjs";
      try {
        const pkg = JSON.parse(fs.readFileSync(pkgPath, "utf8"));
        entry = pkg.exports?.["."]?.default ?? pkg.main ?? entry;
      } catch (e) {
        throw new HttpError("ENGINE_UNAVAILABLE", `cannot read ${pkgPath}: ${(e as Error).message}; stage node_modules (cargo xtask stage)`);
      }
      target = pathToFileURL(path.join(dir, entry)).href;
    }
    try {
      return (await import(target)) as Sdk;
    } catch (e) {
      throw new HttpError("ENGINE_UNAVAILABLE", `cannot import ${target}: ${(e as Error).message}`);
    }
  })();
  loaded.catch(() => { loaded = undefined; });
  return loaded;
}

function toSdkUser(message: UserMessage): Record<string, unknown> {
  const content = typeof message === "string" ? message : message.content;
  return { type: "user", message: { role: "user", content }, parent_tool_use_id: null, session_id: "" };
}

function usageOf(result: Record<string, unknown>, previous: Usage): Usage {
  const models = result.modelUsage as Record<string, Record<string, number>> | undefined;
  const cost = typeof result.total_cost_usd === "number" ? result.total_cost_usd : previous.totalCostUsd;
  if (models && Object.keys(models).length > 0) {
    // modelUsage is cumulative across turns already.
    const sum = (k: string) => Object.values(models).reduce((a, m) => a + (Number(m[k]) || 0), 0);
    return {
      inputTokens: sum("inputTokens"), outputTokens: sum("outputTokens"),
      cacheReadInputTokens: sum("cacheReadInputTokens"), cacheCreationInputTokens: sum("cacheCreationInputTokens"),
      totalCostUsd: cost,
    };
  }
  // `usage` is per turn: add it up.
  const u = (result.usage ?? {}) as Record<string, number>;
  return {
    inputTokens: previous.inputTokens + (Number(u.input_tokens) || 0),
    outputTokens: previous.outputTokens + (Number(u.output_tokens) || 0),
    cacheReadInputTokens: previous.cacheReadInputTokens + (Number(u.cache_read_input_tokens) || 0),
    cacheCreationInputTokens: previous.cacheCreationInputTokens + (Number(u.cache_creation_input_tokens) || 0),
    totalCostUsd: cost,
  };
}

export function claudeAgentSdk(nodeModules: string | undefined): Engine {
  return {
    name: "claude-agent-sdk",
    capabilities: { streamingInput: true, partialMessages: true, permissionCallback: true, sessions: true, budget: true },
    async run(host: EngineHost, onInterrupt) {
      const sdk = await loadSdk(nodeModules);
      let turnDone: (() => void) | undefined;
      let finished = false;
      // Hands the SDK one message per turn: the next only after the previous turn's result.
      async function* prompt(): AsyncGenerator<Record<string, unknown>> {
        for (;;) {
          const message = await host.nextMessage();
          if (message === null || finished) return;
          const done = new Promise<void>((resolve) => { turnDone = resolve; });
          yield toSdkUser(message);
          await done;
        }
      }
      const o = host.options;
      const abortController = new AbortController();
      host.abortSignal.addEventListener("abort", () => abortController.abort(), { once: true });
      const options: Record<string, unknown> = {
        cwd: host.workdir,
        env: host.env,
        abortController,
        stderr: (line: string) => host.log("debug", "engine stderr", { line: line.slice(0, 2000) }),
        canUseTool: async (toolName: string, input: Record<string, unknown>, ctx: { signal: AbortSignal; toolUseID?: string }) => {
          const d = await host.askPermission(toolName, input, ctx?.toolUseID, ctx.signal);
          if (d.decision === "allow") return { behavior: "allow", updatedInput: input };
          if (d.decision === "modify") return { behavior: "allow", updatedInput: d.input };
          return { behavior: "deny", message: d.reason };
        },
      };
      if (o.model) options.model = o.model;
      if (o.systemPrompt) options.systemPrompt = o.systemPrompt;
      else if (o.appendSystemPrompt) options.systemPrompt = { type: "preset", preset: "claude_code", append: o.appendSystemPrompt };
      if (o.maxTurns !== undefined) options.maxTurns = o.maxTurns;
      if (o.maxBudgetUsd !== undefined) options.maxBudgetUsd = o.maxBudgetUsd;
      if (o.permissionMode) options.permissionMode = o.permissionMode;
      if (o.allowedTools) options.allowedTools = o.allowedTools;
      if (o.disallowedTools) options.disallowedTools = o.disallowedTools;
      if (o.includePartialMessages !== undefined) options.includePartialMessages = o.includePartialMessages;
      if (o.resume) options.resume = o.resume;
      if (o.extra) Object.assign(options, o.extra);

      const q = sdk.query({ prompt: prompt(), options });
      onInterrupt(async () => {
        try {
          await q.interrupt?.();
        } catch {
          // Interrupting a query that already ended is fine.
        }
      });
      let usage: Usage = { inputTokens: 0, outputTokens: 0, cacheReadInputTokens: 0, cacheCreationInputTokens: 0, totalCostUsd: 0 };
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
    },
  };
}
