import type { LogIndex, NodeId } from "./types.ts";

/** A linearizable read waiting for a quorum to confirm the leader still leads. */
export interface PendingRead {
  readonly index: LogIndex;
  readonly from: NodeId;
  readonly context: Uint8Array;
  readonly acks: Set<NodeId>;
}

/**
 * The leader's queue of ReadIndex requests. Each waits for heartbeat
 * responses carrying its context from a quorum; confirming one confirms every
 * request queued before it, since those were taken at a lower or equal commit.
 */
export class ReadOnlyQueue {
  private readonly byKey = new Map<string, PendingRead>();
  private readonly order: string[] = [];

  add(index: LogIndex, from: NodeId, context: Uint8Array, selfId: NodeId): void {
    const key = contextKey(context);
    if (this.byKey.has(key)) return;
    this.byKey.set(key, { index, from, context, acks: new Set([selfId]) });
    this.order.push(key);
  }

  /** Records `from`'s acknowledgment of `context`; returns the requests it releases, in order. */
  acknowledge(context: Uint8Array, from: NodeId, hasQuorum: (acks: ReadonlySet<NodeId>) => boolean): PendingRead[] {
    const key = contextKey(context);
    const read = this.byKey.get(key);
    if (read === undefined) return [];
    read.acks.add(from);
    if (!hasQuorum(read.acks)) return [];
    const position = this.order.indexOf(key);
    const releasedKeys = this.order.splice(0, position + 1);
    const released: PendingRead[] = [];
    for (const k of releasedKeys) {
      released.push(this.byKey.get(k)!);
      this.byKey.delete(k);
    }
    return released;
  }

  /** Number of requests waiting. */
  pending(): number {
    return this.order.length;
  }

  /** The context of the newest request, carried by the next heartbeat round; empty if none. */
  lastContext(): Uint8Array {
    const key = this.order[this.order.length - 1];
    return key === undefined ? new Uint8Array(0) : this.byKey.get(key)!.context;
  }

  clear(): void {
    this.byKey.clear();
    this.order.length = 0;
  }
}

function contextKey(context: Uint8Array): string {
  let key = "";
  for (let i = 0; i < context.byteLength; i++) key += String.fromCharCode(context[i]!);
  return key;
}
