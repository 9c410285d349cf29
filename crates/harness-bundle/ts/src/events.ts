// A session's event log: ids from 0, a bounded replay ring, and live SSE subscribers.
import type { ServerResponse } from "node:http";

interface Stored { id: number; frame: string }

export class EventLog {
  private ring: Stored[] = [];
  private nextId = 0;
  private subscribers = new Set<ServerResponse>();
  private closed = false;

  constructor(private readonly sessionId: string, private readonly capacity: number) {}

  get lastId(): number | null { return this.nextId === 0 ? null : this.nextId - 1; }
  get subscriberCount(): number { return this.subscribers.size; }
  get isClosed(): boolean { return this.closed; }
  /** The oldest id still replayable. */
  get firstId(): number { return this.ring.length ? this.ring[0].id : this.nextId; }

  emit(type: string, fields: Record<string, unknown>): void {
    if (this.closed) return;
    const id = this.nextId++;
    const data = { type, id, ts: new Date().toISOString(), sessionId: this.sessionId, ...fields };
    const frame = `event: ${type}\nid: ${id}\ndata: ${JSON.stringify(data)}\n\n`;
    this.ring.push({ id, frame });
    if (this.ring.length > this.capacity) this.ring.shift();
    for (const res of this.subscribers) res.write(frame);
  }

  /** Writes every event after `after` to `res`, then keeps it live unless the log is closed. */
  subscribe(res: ServerResponse, after: number | null, onClose: () => void): void {
    for (const e of this.ring) if (after === null || e.id > after) res.write(e.frame);
    if (this.closed) {
      res.end();
      return;
    }
    this.subscribers.add(res);
    const ping = setInterval(() => res.write(": ping\n\n"), 15_000);
    res.on("close", () => {
      clearInterval(ping);
      this.subscribers.delete(res);
      onClose();
    });
  }

  /** After the last event: ends every stream. */
  close(): void {
    this.closed = true;
    for (const res of this.subscribers) res.end();
    this.subscribers.clear();
  }
}
