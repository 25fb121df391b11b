import { ApplyBatch } from "../multiraft/apply-batch.ts";
import { decodeKvCommand } from "../kv/kv-command.ts";
import { decodePairChunks, snapshotChunks } from "../multiraft/pairs-snapshot.ts";
import type { ApplyOutcome, SnapshotChunks, StateMachine } from "../multiraft/state-machine.ts";
import { directInboxOp } from "../inbox/direct-command.ts";
import type { InboxFanout } from "../inbox/inbox-fanout.ts";
import { inboxNamespace } from "../inbox/inbox-keys.ts";
import { identityOp } from "../identity/identity-command.ts";
import { IdentityState } from "../identity/identity-state.ts";
import { keyPackageOp } from "../keypackages/keypackage-command.ts";
import { KeyPackageState } from "../keypackages/keypackage-state.ts";
import { EntryType, type Entry, type LogIndex } from "../raft/types.ts";
import type { GroupStore, KvWrite } from "../storage/storage-engine.ts";
import { decodeSetHomeserver, encodeSetHomeserver, setHomeserverOp, type HomeserverRecord } from "./directory-command.ts";
import { membershipOp } from "./directory-membership-command.ts";
import { channelClaimOp, decodeChannelClaim } from "./channel-claim.ts";
import { DirectoryMembership, type MembershipResult } from "./directory-membership.ts";

/** What a proposer of a key-value or directory entry learns once it is applied. */
export type ClusterResult = { ok: true } | { ok: false; reason: string };

const kvPrefix = 0x6b; // "k"
const directoryPrefix = 0x64; // "d"
/** Namespace of the channel claims (op 9): channel id -> the homeserver that created it. */
const claimNamespace = 0x68; // "h"
/** Namespace of the device identity records (src/identity). */
export const identityNamespace = 0x69; // "i"
/** Namespace of the KeyPackage directory (src/keypackages). */
export const keyPackageNamespace = 0x70; // "p"
/** Namespace of the directory's invites (op 7, src/node/directory-membership.ts). */
export const inviteNamespace = 0x76; // "v"

function prefixed(prefix: number, key: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + key.byteLength);
  out[0] = prefix;
  out.set(key, 1);
  return out;
}

/** Collects one namespace's writes of an apply round into `writes`. */
function namespaceWriter(prefix: number, writes: KvWrite[]) {
  return {
    put: (key: Uint8Array, value: Uint8Array) => void writes.push({ key: prefixed(prefix, key), value }),
    delete: (key: Uint8Array) => void writes.push({ key: prefixed(prefix, key), delete: true }),
  };
}

/** Local reactions to applied entries: peer links, channel creation. */
export interface ClusterListener {
  onDirectoryChange?(record: HomeserverRecord): void;
  /** A channel id was claimed (by `homeserverId`), or a claim was refused because it was taken. */
  onChannelClaim?(channelId: string, homeserverId: string): void;
}

/**
 * The state machine of the cluster group: the cluster directory (which
 * homeservers exist, where, and with which signing key), device identities,
 * KeyPackages, direct messages, which channel ids are taken (each channel's
 * epochs live in its own group, see channel-group-machine.ts), and the key-value store of the runtime tests and the Raft
 * benchmark. Apply is a pure function of entries and stored state; the
 * listener reacts locally afterwards.
 */
export class ClusterStateMachine implements StateMachine {
  private readonly directory = new Map<string, HomeserverRecord>();
  /** Claimed channel ids and the homeserver that created each. */
  private readonly claims = new Map<string, string>();
  /** Device identity records and blocked homeservers (op byte 4, namespace 'i'). */
  readonly identity: IdentityState;
  /** The KeyPackage directory (op byte 5, namespace 'p'). */
  readonly keyPackages: KeyPackageState;
  /** Invites, joins and leaves of homeservers (op byte 7, namespace 'v'). */
  readonly membership = new DirectoryMembership();
  /** The local inboxes this homeserver fills while applying (namespace 'q', never replicated). */
  private inbox: InboxFanout | undefined;

  constructor(
    private readonly store: GroupStore,
    readonly clusterId: string,
    private readonly listener: ClusterListener = {},
  ) {
    this.identity = new IdentityState({ clusterId, signingKeyOf: (id) => this.directoryKeyOf(id) });
    this.keyPackages = new KeyPackageState({ devices: this.identity.index });
  }

  /** Fills local device inboxes from now on (see src/inbox); call before {@link load}. */
  attachInbox(inbox: InboxFanout): void {
    this.inbox = inbox;
  }

  /** Loads the directory and channels from storage; call once before serving. */
  async load(): Promise<void> {
    this.directory.clear();
    for await (const [, value] of this.store.scan(Uint8Array.of(directoryPrefix))) {
      const record = decodeSetHomeserver(value);
      if (record !== undefined) this.directory.set(record.id, record);
    }
    this.claims.clear();
    for await (const [key, value] of this.store.scan(Uint8Array.of(claimNamespace))) this.claims.set(new TextDecoder().decode(key.subarray(1)), new TextDecoder().decode(value));
    await this.identity.load((prefix) => this.store.scan(prefixed(identityNamespace, prefix)));
    await this.membership.load(() => this.store.scan(Uint8Array.of(inviteNamespace)));
    await this.inbox?.store.load();
  }

  /** A homeserver's raw Ed25519 directory key, if it registered one. */
  private directoryKeyOf(id: string): Uint8Array | undefined {
    const key = this.directory.get(id)?.signingKey;
    return key === undefined || key === "" ? undefined : new Uint8Array(Buffer.from(key, "base64"));
  }

  /** A homeserver's raw Ed25519 signing key as the replicated directory lists it (certificates, batches). */
  signingKeyOf(homeserverId: string): Uint8Array | undefined {
    return this.directoryKeyOf(homeserverId);
  }

  /** The homeserver that claimed `channelId`, if any did. */
  channelClaim(channelId: string): string | undefined {
    return this.claims.get(channelId);
  }

  /** The homeservers the directory knows. */
  homeservers(): ReadonlyMap<string, HomeserverRecord> {
    return this.directory;
  }

  async apply(entries: readonly Entry[]): Promise<ApplyOutcome> {
    const writes: KvWrite[] = [];
    const results = new Map<LogIndex, unknown>();
    const claimed: Array<[string, string]> = [];
    const keyPackageBatch = new ApplyBatch(keyPackageNamespace, (key) => this.store.get(key));
    const inbox = this.inbox?.begin();
    const membershipResults: Array<[string, MembershipResult]> = [];
    for (const entry of entries) {
      if (entry.type !== EntryType.Normal || entry.data.byteLength === 0) continue;
      const op = entry.data[1];
      if (op === directInboxOp) {
        results.set(entry.index, inbox?.direct(entry) ?? { ok: true });
      } else if (op === channelClaimOp) {
        const result = this.applyClaim(entry, writes);
        results.set(entry.index, result);
        if (result.ok) claimed.push([result.channelId, result.homeserverId]);
      } else if (op === keyPackageOp) {
        results.set(entry.index, await this.keyPackages.apply(entry.data.subarray(2), keyPackageBatch));
      } else if (op === identityOp) {
        results.set(entry.index, this.identity.apply(entry.data.subarray(2), namespaceWriter(identityNamespace, writes)));
      } else if (op === setHomeserverOp) {
        results.set(entry.index, this.applyDirectory(entry, writes));
      } else if (op === membershipOp) {
        const { result, nonce } = this.membership.apply(entry.data.subarray(2), this.directoryAccess(writes), namespaceWriter(inviteNamespace, writes));
        results.set(entry.index, result);
        if (nonce !== undefined) membershipResults.push([nonce, result]);
      } else {
        const command = decodeKvCommand(entry.data);
        if (command === undefined) results.set(entry.index, { ok: false, reason: "malformed command" });
        else {
          writes.push({ key: prefixed(kvPrefix, command.key), value: command.value });
          results.set(entry.index, { ok: true });
        }
      }
    }
    for (const write of keyPackageBatch.writes) writes.push(write);
    for (const write of inbox?.writes ?? []) writes.push(write);
    const afterWrite = () => {
      inbox?.afterWrite();
      for (const [channelId, homeserverId] of claimed) this.listener.onChannelClaim?.(channelId, homeserverId);
      for (const [nonce, result] of membershipResults) this.membership.settle(nonce, result);
    };
    return { writes, results, afterWrite };
  }

  private applyDirectory(entry: Entry, writes: KvWrite[]): ClusterResult {
    const record = decodeSetHomeserver(entry.data);
    if (record === undefined) return { ok: false, reason: "malformed homeserver record" };
    const existing = this.directory.get(record.id);
    // Only op 7 changes a status: a homeserver that left rejoins with a new invite.
    if (existing?.status === "left") return { ok: false, reason: `${record.id} has left the cluster; it rejoins with a new invite` };
    // A record without a key (an operator's AddHomeserver) keeps a key the homeserver registered.
    const kept: HomeserverRecord = { ...record, signingKey: record.signingKey === "" ? (existing?.signingKey ?? "") : record.signingKey, status: "active" };
    this.directoryAccess(writes).set(kept);
    return { ok: true };
  }

  /** The directory as op-7 apply changes it: memory, the round's writes, then the listener. */
  private directoryAccess(writes: KvWrite[]) {
    return {
      get: (id: string) => this.directory.get(id),
      set: (record: HomeserverRecord) => {
        this.directory.set(record.id, record);
        writes.push({ key: prefixed(directoryPrefix, new TextEncoder().encode(record.id)), value: encodeSetHomeserver(record) });
        this.listener.onDirectoryChange?.(record);
      },
    };
  }

  /** First claim wins; a claim of an id taken by the same homeserver again is fine (a retried create). */
  private applyClaim(entry: Entry, writes: KvWrite[]): { ok: true; channelId: string; homeserverId: string } | { ok: false; reason: string } {
    const claim = decodeChannelClaim(entry.data);
    if (claim === undefined) return { ok: false, reason: "malformed channel claim" };
    const owner = this.claims.get(claim.channelId);
    if (owner !== undefined && owner !== claim.homeserverId) return { ok: false, reason: `channel ${claim.channelId} exists` };
    if (owner === undefined) {
      this.claims.set(claim.channelId, claim.homeserverId);
      writes.push({ key: prefixed(claimNamespace, new TextEncoder().encode(claim.channelId)), value: new TextEncoder().encode(claim.homeserverId) });
    }
    return { ok: true, ...claim };
  }

  /** Reads a key of the key-value store as of the last applied index. */
  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.store.get(prefixed(kvPrefix, key));
  }

  /** Reads a KeyPackage-namespace key as of the last applied index. */
  keyPackageGet(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.store.get(prefixed(keyPackageNamespace, key));
  }

  /** The replicated state only: local inbox keys ('q') stay out of snapshots. */
  snapshotChunks(): SnapshotChunks {
    const store = this.store;
    return snapshotChunks(async function* replicated(prefix) {
      for await (const pair of store.scan(prefix)) if (pair[0][0] !== inboxNamespace) yield pair;
    });
  }

  /** Writes a snapshot's replicated state, keeping the local inboxes. */
  restoreStored(chunks: SnapshotChunks): Promise<void> {
    return this.store.restoreStateMachine(decodePairChunks(chunks), (key) => key[0] === inboxNamespace);
  }

  /** Reloads the directory and the rest from the restored records; the inboxes get gap markers. */
  async afterRestore(index: LogIndex): Promise<void> {
    await this.load();
    // Channel events reach the inboxes through the channel groups; the skipped entries here were direct messages.
    await this.inbox?.afterSnapshot(index, []);
    for (const record of this.directory.values()) this.listener.onDirectoryChange?.(record);
  }
}
