/**
 * A ring buffer of the last simulator events, kept as cheap records and
 * formatted only when a violation needs a readable trace.
 */
import { MessageType, type Entry, type Message } from "../raft/types.ts";

/** What a trace record carries beyond its time and node: a message, or free text. */
export type TraceDetail = Message | string;

interface TraceRecord {
  atMs: number;
  seq: number;
  node: string;
  what: string;
  detail: TraceDetail;
}

/** A fixed-size ring of records, overwritten oldest first. */
class Ring {
  readonly records: TraceRecord[] = [];
  private next = 0;

  constructor(private readonly capacity: number) {}

  add(atMs: number, seq: number, node: string, what: string, detail: TraceDetail): void {
    if (this.capacity <= 0) return;
    if (this.records.length < this.capacity) {
      this.records.push({ atMs, seq, node, what, detail });
      return;
    }
    const r = this.records[this.next]!;
    r.atMs = atMs;
    r.seq = seq;
    r.node = node;
    r.what = what;
    r.detail = detail;
    this.next = (this.next + 1) % this.capacity;
  }
}

/**
 * The last `capacity` message deliveries, plus the last `capacity / 3`
 * notable events (faults, crashes, elections), which would otherwise scroll
 * out behind the heartbeats. Formatted merged in time order.
 */
export class TraceRing {
  private readonly messages: Ring;
  private readonly notable: Ring;
  private seq = 0;

  constructor(capacity: number) {
    this.messages = new Ring(capacity);
    this.notable = new Ring(Math.ceil(capacity / 3));
  }

  /** Records one event. `what` is a short verb ("recv", "crash"); `detail` is formatted lazily. */
  record(atMs: number, node: string, what: string, detail: TraceDetail = ""): void {
    const ring = typeof detail === "string" ? this.notable : this.messages;
    ring.add(atMs, this.seq++, node, what, detail);
  }

  /** The recorded events as lines, oldest first. */
  format(): string[] {
    const all = [...this.messages.records, ...this.notable.records].sort((a, b) => a.seq - b.seq);
    return all.map((r) => {
      const detail = typeof r.detail === "string" ? r.detail : formatMessage(r.detail);
      return `${r.atMs.toFixed(1).padStart(9)}ms ${r.node.padEnd(4)} ${r.what.padEnd(9)} ${detail}`.trimEnd();
    });
  }
}

/** One message in one line, e.g. `n1->n2 Append t3 prev=10@2 ents=[11@3 12@3] commit=9`. */
export function formatMessage(m: Message): string {
  const parts = [`${m.from}->${m.to}`, MessageType[m.type] ?? `type${m.type}`, `t${m.term}`];
  switch (m.type) {
    case MessageType.Append:
      parts.push(`prev=${m.index}@${m.logTerm}`, `ents=${formatEntries(m.entries)}`, `commit=${m.commit}`);
      break;
    case MessageType.Vote:
    case MessageType.PreVote:
      parts.push(`last=${m.index}@${m.logTerm}`);
      break;
    case MessageType.AppendResponse:
      parts.push(`index=${m.index}`);
      if (m.reject) parts.push(`reject hint=${m.rejectHint}@${m.rejectHintTerm}`);
      break;
    case MessageType.Heartbeat:
      parts.push(`commit=${m.commit}`);
      break;
    case MessageType.Snapshot:
      if (m.snapshot !== null) parts.push(`snap=${m.snapshot.metadata.index}@${m.snapshot.metadata.term}`);
      break;
    default:
      if (m.reject) parts.push("reject");
  }
  return parts.join(" ");
}

/** Entries as `[index@term ...]`, abbreviated when long. */
export function formatEntries(entries: readonly Entry[]): string {
  if (entries.length === 0) return "[]";
  const shown = entries.length <= 4 ? entries : [entries[0]!, entries[entries.length - 1]!];
  const items = shown.map((e) => `${e.index}@${e.term}${e.type === 1 ? "cc" : ""}`);
  return entries.length <= 4 ? `[${items.join(" ")}]` : `[${items[0]} .. ${items[1]} (${entries.length})]`;
}
