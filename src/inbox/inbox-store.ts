/**
 * The durable per-device inbox queues of one homeserver. Entries are appended
 * while the cluster log is applied (their writes join the apply batch, so the
 * queue order is the log order and a crash recovers exactly); acks delete
 * entries through a local write. In memory: per device the sequence numbers,
 * counts and open gaps, rebuilt from RocksDB at load.
 *
 * A device that is online reads what was just appended and acks it soon
 * after. So that this costs no RocksDB iterator per new entry and per ack
 * (with a hundred members per message, those iterators and ack writes queue in
 * front of the apply batches), each device keeps the stored bytes of its
 * newest unacked entries in memory (bounded): reads and acks that fall inside
 * that tail use it; others scan RocksDB. Acks that arrive together are written
 * in one batch.
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import { encodeInboxEntry } from "../channel/record-codec.ts";
import { EntryKind, GapReason, InboxEntrySchema, type InboxEntry } from "../gen/epochd/inbox/v1/inbox_pb.ts";
import { assert } from "../raft/assert.ts";
import type { KvWrite } from "../storage/storage-engine.ts";
import { allAckedPrefix, allEntriesPrefix, decodeSequence, encodeSequence, inboxAckedKey, inboxEntryKey, inboxEntryPrefix, parseInboxKey } from "./inbox-keys.ts";
import type { InboxLimits } from "./inbox-limits.ts";
import type { LocalWriter } from "./local-write.ts";

/** What the store needs from the group's state key space (full keys, namespace byte included). */
export interface InboxStorage {
  scan(prefix: Uint8Array, limit?: number, from?: Uint8Array): AsyncIterable<[Uint8Array, Uint8Array]>;
  readonly write: LocalWriter;
}

/** Observers for metrics. */
export interface InboxObserver {
  /** An item did not fit a full inbox: a direct message refused, or a channel event replaced by a gap. */
  onFull?(kind: "direct" | "channel"): void;
}

/** A device's inbox position, as the API reports it. */
export interface InboxPosition {
  readonly lastSequence: bigint;
  readonly ackedSequence: bigint;
  readonly entries: number;
  readonly bytes: number;
}

/** The entry fields an appender sets; the store assigns the sequence. */
export interface NewEntry {
  readonly kind: EntryKind;
  readonly messageId: string;
  readonly channelId?: string;
  readonly channelSequence?: bigint;
  readonly epoch?: bigint;
  readonly payload?: Uint8Array;
  readonly logIndex?: bigint;
  readonly senderDeviceId?: string;
  readonly gapReason?: number;
}

/** The outcome of an append. */
export type AppendOutcome = { queued: true; sequence: bigint } | { queued: false; reason: "full" | "covered-by-gap" };

interface DeviceQueue {
  /** Everything up to here is acked and deleted. Invariant: acked <= durable <= last. */
  acked: bigint;
  /** Highest sequence in RocksDB (readers see up to here). */
  durable: bigint;
  /** Highest sequence assigned, possibly still in an apply batch being written. */
  last: bigint;
  entries: number;
  bytes: number;
  /** Channels whose last queued entry is a gap marker not yet acked: their next events are covered by it. */
  readonly openGaps: Map<string, bigint>;
  /** Called whenever `durable` or `acked` moves. */
  readonly waiters: Set<() => void>;
  /**
   * The stored bytes of the newest entries, in sequence order, contiguous, all above `acked`
   * (possibly not yet durable). Bounded by tailEntriesMax and tailBytesMax; the oldest go first.
   */
  readonly tail: TailEntry[];
  tailBytes: number;
}

interface TailEntry {
  readonly sequence: bigint;
  readonly value: Uint8Array;
  /** The channel of a gap marker (for the open-gap bookkeeping of acks). */
  readonly gapChannelId: string | undefined;
}

/** Newest entries per device kept in memory for reads and acks (see the module comment). */
export const tailEntriesMax = 256;
export const tailBytesMax = 128 * 1024;

/** What an ack deletes, planned before the batch is written. */
interface AckPlan {
  readonly through: bigint;
  readonly writes: KvWrite[];
  readonly count: number;
  readonly bytes: number;
  /** Channels whose open gap marker the ack deletes. */
  readonly closedGaps: string[];
}

interface PendingAck {
  through: bigint;
  readonly waiters: Array<{ resolve: (position: InboxPosition) => void; reject: (error: unknown) => void }>;
}

/** The inbox queues of the devices one homeserver sponsors. */
export class InboxStore {
  private readonly devices = new Map<string, DeviceQueue>();
  /** Devices appended to since the last {@link markDurable}. */
  private readonly pending = new Set<string>();
  /** Acks waiting for the next batch, by device (the highest sequence asked). */
  private readonly pendingAcks = new Map<string, PendingAck>();
  /** The ack batches, one after another. */
  private ackFlushes: Promise<void> = Promise.resolve();
  private ackFlushScheduled = false;

  constructor(
    private readonly storage: InboxStorage,
    readonly limits: InboxLimits,
    private readonly observer: InboxObserver = {},
  ) {}

  /** Rebuilds the in-memory index from RocksDB; call at start and after a snapshot restore. */
  async load(): Promise<void> {
    const waiters = new Map([...this.devices].map(([id, q]) => [id, q.waiters]));
    this.devices.clear();
    this.pending.clear();
    for await (const [key, value] of this.storage.scan(allAckedPrefix)) {
      const parsed = parseInboxKey(key);
      if (parsed !== undefined) this.queue(parsed.deviceId).acked = decodeSequence(value);
    }
    for await (const [key, value] of this.storage.scan(allEntriesPrefix)) {
      const parsed = parseInboxKey(key);
      if (parsed?.sequence === undefined) continue;
      const queue = this.queue(parsed.deviceId);
      const entry = fromBinary(InboxEntrySchema, value);
      queue.entries++;
      queue.bytes += value.byteLength;
      if (parsed.sequence > queue.last) queue.last = queue.durable = parsed.sequence;
      if (entry.kind === EntryKind.GAP) queue.openGaps.set(entry.channelId, parsed.sequence);
      else if (entry.channelId !== "") queue.openGaps.delete(entry.channelId);
    }
    for (const queue of this.devices.values()) if (queue.acked > queue.last) queue.last = queue.durable = queue.acked;
    // Subscribers of before the reload keep listening.
    for (const [id, set] of waiters) for (const wake of set) this.queue(id).waiters.add(wake);
    this.wakeAll();
  }

  private queue(deviceId: string): DeviceQueue {
    let queue = this.devices.get(deviceId);
    if (queue === undefined) {
      queue = { acked: 0n, durable: 0n, last: 0n, entries: 0, bytes: 0, openGaps: new Map(), waiters: new Set(), tail: [], tailBytes: 0 };
      this.devices.set(deviceId, queue);
    }
    return queue;
  }

  /**
   * Appends an entry to `deviceId`'s inbox, adding its write to `writes` (the
   * apply batch). A full inbox refuses direct messages; a channel event that
   * does not fit becomes one gap marker per channel (allowed past the bound),
   * and later events of that channel are covered by the open gap.
   */
  append(deviceId: string, init: NewEntry, writes: KvWrite[]): AppendOutcome {
    const queue = this.queue(deviceId);
    const isChannelEvent = init.kind !== EntryKind.DIRECT && init.kind !== EntryKind.GAP && (init.channelId ?? "") !== "";
    const value = this.encode(queue.last + 1n, init);
    const fits = queue.entries + 1 <= this.limits.entriesMax && queue.bytes + value.byteLength <= this.limits.bytesMax;
    if (fits) return { queued: true, sequence: this.put(deviceId, queue, init, writes, value) };
    this.observer.onFull?.(isChannelEvent ? "channel" : "direct");
    if (!isChannelEvent) return { queued: false, reason: "full" };
    const channelId = init.channelId!;
    if (queue.openGaps.has(channelId)) return { queued: false, reason: "covered-by-gap" };
    this.appendGap(deviceId, channelId, init.logIndex ?? 0n, GapReason.INBOX_FULL, writes);
    return { queued: false, reason: "full" };
  }

  /** Queues a gap marker for `channelId` (whatever the bound: one per channel at most is open). */
  appendGap(deviceId: string, channelId: string, logIndex: bigint, reason: number, writes: KvWrite[]): bigint {
    const queue = this.queue(deviceId);
    const existing = queue.openGaps.get(channelId);
    if (existing !== undefined) return existing;
    const init: NewEntry = { kind: EntryKind.GAP, channelId, logIndex, gapReason: reason, messageId: `gap/${logIndex}/${channelId}` };
    return this.put(deviceId, queue, init, writes);
  }

  private encode(sequence: bigint, init: NewEntry): Uint8Array {
    return encodeInboxEntry(create(InboxEntrySchema, { ...init, sequence }));
  }

  /** Queues `init` as the device's next entry; `value`: its encoding at that sequence, if made already. */
  private put(deviceId: string, queue: DeviceQueue, init: NewEntry, writes: KvWrite[], value = this.encode(queue.last + 1n, init)): bigint {
    const sequence = queue.last + 1n;
    writes.push({ key: inboxEntryKey(deviceId, sequence), value });
    this.remember(queue, { sequence, value, gapChannelId: init.kind === EntryKind.GAP ? (init.channelId ?? "") : undefined });
    queue.last = sequence;
    queue.entries++;
    queue.bytes += value.byteLength;
    const channelId = init.channelId ?? "";
    if (init.kind === EntryKind.GAP) queue.openGaps.set(channelId, sequence);
    else if (channelId !== "") queue.openGaps.delete(channelId);
    this.pending.add(deviceId);
    return sequence;
  }

  /** Adds an entry to the device's in-memory tail, dropping the oldest beyond the bounds. */
  private remember(queue: DeviceQueue, entry: TailEntry): void {
    queue.tail.push(entry);
    queue.tailBytes += entry.value.byteLength;
    while (queue.tail.length > tailEntriesMax || queue.tailBytes > tailBytesMax) {
      queue.tailBytes -= queue.tail.shift()!.value.byteLength;
    }
  }

  /** The tail entries from `from` (inclusive) on, when the tail holds `from`; undefined when it does not. */
  private tailFrom(queue: DeviceQueue, from: bigint): TailEntry[] | undefined {
    const first = queue.tail[0];
    if (first === undefined || from < first.sequence) return undefined;
    return queue.tail.slice(Number(from - first.sequence));
  }

  /** Writes local inbox keys outside an apply batch (gap markers after a snapshot). */
  writeLocal(writes: readonly KvWrite[]): Promise<void> {
    return this.storage.write(writes);
  }

  /** Whether one more entry of `bytes` would fit `deviceId`'s inbox now. */
  hasRoom(deviceId: string, bytes: number): boolean {
    const queue = this.devices.get(deviceId);
    return queue === undefined || (queue.entries + 1 <= this.limits.entriesMax && queue.bytes + bytes <= this.limits.bytesMax);
  }

  /** Call once the apply batch holding the appends is in RocksDB: readers may see them now. */
  markDurable(): void {
    for (const deviceId of this.pending) {
      const queue = this.devices.get(deviceId);
      if (queue === undefined) continue;
      queue.durable = queue.last;
      for (const wake of queue.waiters) wake();
    }
    this.pending.clear();
  }

  /** The position of `deviceId`'s inbox (durable entries only). */
  position(deviceId: string): InboxPosition {
    const queue = this.devices.get(deviceId);
    if (queue === undefined) return { lastSequence: 0n, ackedSequence: 0n, entries: 0, bytes: 0 };
    return { lastSequence: queue.durable, ackedSequence: queue.acked, entries: queue.entries, bytes: queue.bytes };
  }

  /** Entries held by all devices. */
  totalEntries(): number {
    let total = 0;
    for (const queue of this.devices.values()) total += queue.entries;
    return total;
  }

  /** Up to `limit` durable entries of `deviceId` after sequence `after`, in order (stored form: no certificates). */
  async read(deviceId: string, after: bigint, limit: number): Promise<InboxEntry[]> {
    assert(limit > 0, "read limit must be positive");
    const queue = this.devices.get(deviceId);
    if (queue === undefined || after >= queue.durable) return [];
    const start = (after > queue.acked ? after : queue.acked) + 1n;
    const cached = this.tailFrom(queue, start);
    if (cached !== undefined) {
      return cached.filter((e) => e.sequence <= queue.durable).slice(0, limit).map((e) => fromBinary(InboxEntrySchema, e.value));
    }
    const from = inboxEntryKey(deviceId, start);
    const entries: InboxEntry[] = [];
    for await (const [, value] of this.storage.scan(inboxEntryPrefix(deviceId), limit, from)) {
      const entry = fromBinary(InboxEntrySchema, value);
      if (entry.sequence > queue.durable) break;
      entries.push(entry);
    }
    return entries;
  }

  /**
   * Acknowledges `deviceId`'s entries up to `through` and deletes them from
   * RocksDB. Throws RangeError for a sequence never delivered (beyond the
   * durable end); acking again what is acked already changes nothing. Acks of
   * all devices that arrive in one turn are written in one batch.
   */
  ack(deviceId: string, through: bigint): Promise<InboxPosition> {
    const queue = this.queue(deviceId);
    if (through > queue.durable) return Promise.reject(new RangeError(`sequence ${through} is beyond the inbox's last sequence ${queue.durable}`));
    if (through <= queue.acked && !this.pendingAcks.has(deviceId)) return Promise.resolve(this.position(deviceId));
    return new Promise((resolve, reject) => {
      const pending = this.pendingAcks.get(deviceId) ?? { through: 0n, waiters: [] };
      if (through > pending.through) pending.through = through;
      pending.waiters.push({ resolve, reject });
      this.pendingAcks.set(deviceId, pending);
      this.scheduleAckFlush();
    });
  }

  private scheduleAckFlush(): void {
    if (this.ackFlushScheduled) return;
    this.ackFlushScheduled = true;
    this.ackFlushes = this.ackFlushes
      .then(() => new Promise<void>((resolve) => setImmediate(resolve)))
      .then(() => {
        this.ackFlushScheduled = false;
        return this.flushAcks();
      });
  }

  /** Writes every pending ack in one batch, then updates the counters and answers the callers. Never rejects. */
  private async flushAcks(): Promise<void> {
    const batch = [...this.pendingAcks];
    this.pendingAcks.clear();
    const plans = new Map<string, AckPlan>();
    try {
      for (const [deviceId, pending] of batch) {
        const queue = this.queue(deviceId);
        if (pending.through > queue.acked) plans.set(deviceId, await this.planAck(deviceId, queue, pending.through));
      }
      const writes = [...plans.values()].flatMap((plan) => plan.writes);
      if (writes.length > 0) await this.storage.write(writes);
    } catch (error) {
      for (const [, pending] of batch) for (const waiter of pending.waiters) waiter.reject(error);
      return;
    }
    for (const [deviceId, plan] of plans) this.applyAck(this.queue(deviceId), plan);
    for (const [deviceId, pending] of batch) for (const waiter of pending.waiters) waiter.resolve(this.position(deviceId));
  }

  /** The deletes of an ack through `through`: from the in-memory tail when it holds them all, else from a scan. */
  private async planAck(deviceId: string, queue: DeviceQueue, through: bigint): Promise<AckPlan> {
    const writes: KvWrite[] = [];
    let bytes = 0;
    let count = 0;
    const closedGaps: string[] = [];
    const take = (key: Uint8Array, sequence: bigint, valueBytes: number, gapChannelId: string | undefined) => {
      writes.push({ key, delete: true });
      bytes += valueBytes;
      count++;
      if (gapChannelId !== undefined && queue.openGaps.get(gapChannelId) === sequence) closedGaps.push(gapChannelId);
    };
    const cached = this.tailFrom(queue, queue.acked + 1n);
    if (cached !== undefined && cached.length > 0 && cached[cached.length - 1]!.sequence >= through) {
      for (const entry of cached) {
        if (entry.sequence > through) break;
        take(inboxEntryKey(deviceId, entry.sequence), entry.sequence, entry.value.byteLength, entry.gapChannelId);
      }
    } else {
      for await (const [key, value] of this.storage.scan(inboxEntryPrefix(deviceId), Number(through - queue.acked), inboxEntryKey(deviceId, queue.acked + 1n))) {
        const parsed = parseInboxKey(key);
        if (parsed?.sequence === undefined || parsed.sequence > through) break;
        const entry = fromBinary(InboxEntrySchema, value);
        take(key, parsed.sequence, value.byteLength, entry.kind === EntryKind.GAP ? entry.channelId : undefined);
      }
    }
    writes.push({ key: inboxAckedKey(deviceId), value: encodeSequence(through) });
    return { through, writes, count, bytes, closedGaps };
  }

  /** Moves a device's counters past an ack whose deletes are written. */
  private applyAck(queue: DeviceQueue, plan: AckPlan): void {
    queue.acked = plan.through;
    queue.entries -= plan.count;
    queue.bytes -= plan.bytes;
    for (const channelId of plan.closedGaps) queue.openGaps.delete(channelId);
    while (queue.tail.length > 0 && queue.tail[0]!.sequence <= plan.through) queue.tailBytes -= queue.tail.shift()!.value.byteLength;
    for (const wake of queue.waiters) wake();
  }

  /** Calls `wake` whenever `deviceId`'s inbox gets new durable entries or an ack; returns the unsubscribe. */
  watch(deviceId: string, wake: () => void): () => void {
    const queue = this.queue(deviceId);
    queue.waiters.add(wake);
    return () => queue.waiters.delete(wake);
  }

  /** The devices with an inbox here (entries or an ack record). */
  deviceIds(): string[] {
    return [...this.devices.keys()];
  }

  private wakeAll(): void {
    for (const queue of this.devices.values()) for (const wake of queue.waiters) wake();
  }
}
