/**
 * The key layout of the one RocksDB instance all Raft groups of a homeserver share.
 *
 * ```
 * engine records   0x00 | kind
 *   0x00 0x01                          format version        counter (currently 1)
 *   0x00 0x02 | groupId                group registry        the group exists; empty, or its catch-up floor (index, term)
 *   0x00 0x03 | transfer | seq         staged snapshot       see snapshot-staging.ts
 * group records    0x01 | len(groupId): u8 | groupId (UTF-8, 1..255 bytes) | kind | suffix
 *   ... 0x01                           hard state            term, vote, commit
 *   ... 0x02                           snapshot metadata     index, term, conf state
 *   ... 0x03                           snapshot data         the application's opaque bytes
 *   ... 0x04                           log start             index, term of the last discarded entry
 *   ... 0x05                           applied index         counter
 *   ... 0x06 | index: u64 big-endian   log entry             type, term, data
 *   ... 0x07 | user key                state machine data    the application's value
 * ```
 *
 * The length byte makes group prefixes prefix-free: no group's keys start with
 * another group's prefix, so a range scan of one group never sees another.
 * Big-endian indexes make RocksDB's byte order the log order. Every value is a
 * checksummed record (see records.ts) whose CRC-32C covers key and payload, so
 * a value copied or moved to another key fails its check as well.
 */
import type { GroupId, LogIndex } from "../raft/types.ts";

/** The first byte of every key. */
export enum KeySpace {
  Engine = 0x00,
  Group = 0x01,
}

/** The second byte of engine keys. */
export enum EngineKind {
  FormatVersion = 0x01,
  GroupRegistry = 0x02,
  /** Snapshot data from a leader, staged as it arrives (see snapshot-staging.ts). */
  StagedSnapshot = 0x03,
}

/** The byte after a group's prefix. */
export enum GroupKind {
  HardState = 0x01,
  SnapshotMetadata = 0x02,
  SnapshotData = 0x03,
  LogStart = 0x04,
  AppliedIndex = 0x05,
  LogEntry = 0x06,
  StateMachine = 0x07,
}

/** The longest group id, in UTF-8 bytes (its length is stored in one byte). */
export const groupIdBytesMax = 255;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Thrown for a group id the key layout cannot hold (empty or longer than 255 UTF-8 bytes). */
export class InvalidGroupIdError extends Error {
  constructor(readonly groupId: GroupId, reason: string) {
    super(`invalid group id ${JSON.stringify(groupId)}: ${reason}`);
    this.name = "InvalidGroupIdError";
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const result = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    result.set(part, offset);
    offset += part.length;
  }
  return result;
}

function groupIdBytes(groupId: GroupId): Uint8Array {
  const bytes = utf8Encoder.encode(groupId);
  if (bytes.length === 0) throw new InvalidGroupIdError(groupId, "empty");
  if (bytes.length > groupIdBytesMax) {
    throw new InvalidGroupIdError(groupId, `${bytes.length} UTF-8 bytes, at most ${groupIdBytesMax}`);
  }
  return bytes;
}

/** The key of the format version record. */
export const formatVersionKey: Uint8Array = Uint8Array.of(KeySpace.Engine, EngineKind.FormatVersion);

/** The prefix of all group registry keys. */
export const groupRegistryPrefix: Uint8Array = Uint8Array.of(KeySpace.Engine, EngineKind.GroupRegistry);

/** The registry key saying `groupId` exists. */
export function groupRegistryKey(groupId: GroupId): Uint8Array {
  return concat(groupRegistryPrefix, groupIdBytes(groupId));
}

/** The key prefix of one group: 0x01 | length | id. */
export function groupPrefix(groupId: GroupId): Uint8Array {
  const id = groupIdBytes(groupId);
  return concat(Uint8Array.of(KeySpace.Group, id.length), id);
}

/** Builds the keys of one group; the prefix is computed once. */
export class GroupKeys {
  readonly prefix: Uint8Array;
  readonly hardState: Uint8Array;
  readonly snapshotMetadata: Uint8Array;
  readonly snapshotData: Uint8Array;
  readonly logStart: Uint8Array;
  readonly appliedIndex: Uint8Array;
  /** The prefix of all log entry keys. */
  readonly logPrefix: Uint8Array;
  /** The prefix of all state machine keys. */
  readonly stateMachinePrefix: Uint8Array;

  constructor(readonly groupId: GroupId) {
    this.prefix = groupPrefix(groupId);
    this.hardState = this.kind(GroupKind.HardState);
    this.snapshotMetadata = this.kind(GroupKind.SnapshotMetadata);
    this.snapshotData = this.kind(GroupKind.SnapshotData);
    this.logStart = this.kind(GroupKind.LogStart);
    this.appliedIndex = this.kind(GroupKind.AppliedIndex);
    this.logPrefix = this.kind(GroupKind.LogEntry);
    this.stateMachinePrefix = this.kind(GroupKind.StateMachine);
  }

  private kind(kind: GroupKind): Uint8Array {
    return concat(this.prefix, Uint8Array.of(kind));
  }

  /** The key of the log entry at `index`. */
  logEntry(index: LogIndex): Uint8Array {
    const key = new Uint8Array(this.logPrefix.length + 8);
    key.set(this.logPrefix);
    new DataView(key.buffer).setBigUint64(this.logPrefix.length, BigInt(index), false);
    return key;
  }

  /** The key of the application's `userKey`. */
  stateMachine(userKey: Uint8Array): Uint8Array {
    return concat(this.stateMachinePrefix, userKey);
  }
}

/**
 * The smallest key greater than every key starting with `prefix`, for an
 * exclusive upper bound of a prefix scan; undefined when there is none (all 0xff).
 */
export function prefixEnd(prefix: Uint8Array): Uint8Array | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = prefix.slice(0, i + 1);
      end[i]!++;
      return end;
    }
  }
  return undefined;
}

/** What a key names, parsed; used to dispatch records on load and to name them in errors. */
export type ParsedKey =
  | { space: "engine"; kind: EngineKind; groupId?: GroupId }
  | { space: "group"; groupId: GroupId; kind: GroupKind; index?: LogIndex; userKey?: Uint8Array }
  | { space: "unknown" };

function decodeGroupId(bytes: Uint8Array): GroupId | undefined {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Parses a key of this layout; `{ space: "unknown" }` for anything it does not recognise. */
export function parseKey(key: Uint8Array): ParsedKey {
  if (key[0] === KeySpace.Engine && key[1] === EngineKind.FormatVersion && key.length === 2) {
    return { space: "engine", kind: EngineKind.FormatVersion };
  }
  if (key[0] === KeySpace.Engine && key[1] === EngineKind.GroupRegistry && key.length > 2) {
    const groupId = decodeGroupId(key.subarray(2));
    return groupId === undefined ? { space: "unknown" } : { space: "engine", kind: EngineKind.GroupRegistry, groupId };
  }
  if (key[0] !== KeySpace.Group || key.length < 3) return { space: "unknown" };
  const idLength = key[1]!;
  const groupId = decodeGroupId(key.subarray(2, 2 + idLength));
  const kind = key[2 + idLength];
  if (groupId === undefined || idLength === 0 || kind === undefined) return { space: "unknown" };
  const suffix = key.subarray(3 + idLength);
  return parseGroupSuffix(groupId, kind, suffix);
}

function parseGroupSuffix(groupId: GroupId, kind: number, suffix: Uint8Array): ParsedKey {
  switch (kind) {
    case GroupKind.HardState:
    case GroupKind.SnapshotMetadata:
    case GroupKind.SnapshotData:
    case GroupKind.LogStart:
    case GroupKind.AppliedIndex:
      return suffix.length === 0 ? { space: "group", groupId, kind } : { space: "unknown" };
    case GroupKind.LogEntry: {
      if (suffix.length !== 8) return { space: "unknown" };
      const index = new DataView(suffix.buffer, suffix.byteOffset, 8).getBigUint64(0, false);
      if (index > BigInt(Number.MAX_SAFE_INTEGER)) return { space: "unknown" };
      return { space: "group", groupId, kind, index: Number(index) };
    }
    case GroupKind.StateMachine:
      return { space: "group", groupId, kind, userKey: suffix };
    default:
      return { space: "unknown" };
  }
}

const groupKindNames: Record<GroupKind, string> = {
  [GroupKind.HardState]: "hard state",
  [GroupKind.SnapshotMetadata]: "snapshot metadata",
  [GroupKind.SnapshotData]: "snapshot data",
  [GroupKind.LogStart]: "log start",
  [GroupKind.AppliedIndex]: "applied index",
  [GroupKind.LogEntry]: "log entry",
  [GroupKind.StateMachine]: "state machine key",
};

function hex(bytes: Uint8Array, bytesMax = 48): string {
  const shown = Array.from(bytes.subarray(0, bytesMax), (b) => b.toString(16).padStart(2, "0")).join("");
  return bytes.length > bytesMax ? `${shown}...` : shown;
}

/** A human description of a key, for error messages: `group "c1" log entry 17 (key 0102...)`. */
export function describeKey(key: Uint8Array): string {
  const parsed = parseKey(key);
  const raw = `(key 0x${hex(key)})`;
  switch (parsed.space) {
    case "engine":
      return parsed.kind === EngineKind.FormatVersion
        ? `format version record ${raw}`
        : `registry entry of group ${JSON.stringify(parsed.groupId)} ${raw}`;
    case "group": {
      const what = groupKindNames[parsed.kind];
      const detail = parsed.index !== undefined ? ` ${parsed.index}` : parsed.userKey ? ` 0x${hex(parsed.userKey)}` : "";
      return `group ${JSON.stringify(parsed.groupId)} ${what}${detail} ${raw}`;
    }
    case "unknown":
      return `unrecognised key ${raw}`;
  }
}
