/**
 * The multi-group simulator: homeservers hosting one Raft group per channel
 * (the real core, RawNode), in virtual time, with the channel layer's own
 * logic: a group is created on its creator's homeserver; its leader follows
 * MLS adds and removes with membership changes (nextMembershipStep: host and
 * add a learner, promote it once caught up, remove a homeserver without
 * members) and admits commands only while the group follows its members and
 * it has applied its term's first entry; a removed homeserver drops its copy.
 * Faults: crashes and restarts of whole homeservers (all their groups),
 * partitions, message loss and delay. Storage is synchronous here (the
 * single-group simulator covers lost unsynced writes).
 *
 * Checked after every event, per group: at most one leader per term; every
 * replica applies the same entry and decides the same result at each index
 * (so one accepted commit per epoch); a certificate names exactly the group's
 * voters at the commit's entry, which are the homeservers of the tree it
 * certifies, and only they sign; after the commit that removes a homeserver's
 * last member is applied, that homeserver is sent no channel entry appended
 * later (until it is added again). Then a liveness phase: healed, every
 * group must settle on its members' homeservers and accept a commit, and
 * every other homeserver must have dropped its copy.
 */
import { believesLeaveNotice, followsMembers, lostCopyAction, membershipSettled, nextMembershipStep } from "../channel/group-membership.ts";
import { defaultRaftConfig, RawNode, type RaftEvent } from "../raft/raw-node.ts";
import { isConfMember } from "../raft/conf-change.ts";
import { MemoryStorage } from "../raft/memory-storage.ts";
import { ConfChangeType, EntryType, MessageType, noCatchUpFloor, type CatchUpFloor, type ConfState, type Entry, type GroupId, type LogIndex, type Message, type NodeId } from "../raft/types.ts";
import { ChannelModel, encodeModelCommand, homeserversOf, type ChannelModelCommand, type ChannelModelResult } from "./channel-model.ts";
import { storedLogView, storedNextIndex } from "../multiraft/stored-next.ts";
import { quorumSize } from "../channel/certificate.ts";
import { Prng } from "./prng.ts";

/** Settings of one multi-group run. */
export interface ChannelSimOptions {
  readonly seed: number;
  readonly homeservers?: number;
  readonly channels?: number;
  /** Ticks of the fault phase. */
  readonly steps?: number;
  /** Inject crashes, partitions, loss and delay (default true). */
  readonly faults?: boolean;
  /** Multiplies the chance per tick of a crash and of an isolation, and of losing a message (default 1). */
  readonly faultScale?: number;
  /** Ticks the healed cluster gets to settle every channel and accept a commit in each. */
  readonly livenessTicks?: number;
  /**
   * Deliberately broken variants, for tests that prove the checks bite:
   * "admit-unsettled" (the leader admits commands while the group does not
   * follow its members), "no-busy" (and apply accepts them then too),
   * "no-catch-up-floor" (copies made anew get no catch-up floor; with
   * `lostDisks`), "sign-stored-any-term" (a homeserver signs a stored
   * commit right after what it applied whatever term it was stored in),
   * "sign-past-applied" (it signs its last stored commit as if everything
   * before it were applied).
   */
  readonly broken?: "admit-unsettled" | "no-busy" | "no-catch-up-floor" | "sign-stored-any-term" | "sign-past-applied";
  /**
   * A crashed homeserver sometimes comes back with an empty disk, every copy
   * lost (only while no other is recovering from one, and never the only
   * voter of a group). Its groups' members then run the lost-copy rules
   * (`lostCopyAction`: remove and add back, or host again in place), and copies
   * catch up a few entries per Append, so that a copy made anew stops between
   * old memberships. Off by default (it changes every seed's schedule).
   */
  readonly lostDisks?: boolean;
  /**
   * With `lostDisks`: disks are lost during membership changes too (a
   * conf change in flight or unapplied somewhere, a group about to change).
   * A channel may then stall for good (docs/ARCHITECTURE.md, "Open"): only
   * the safety checks are meant to hold.
   */
  readonly lostDisksDuringChanges?: boolean;
}

/** One broken promise. */
export interface ChannelSimViolation {
  readonly seed: number;
  readonly check: string;
  readonly message: string;
  readonly tick: number;
}

/** The outcome of one run. */
export interface ChannelSimResult {
  readonly seed: number;
  readonly ticks: number;
  readonly channels: number;
  readonly commitsAccepted: number;
  readonly messagesAccepted: number;
  readonly conflicts: number;
  readonly busyRefusals: number;
  readonly membershipChanges: number;
  /** Homeservers removed from a channel's group after losing their last member. */
  readonly removals: number;
  readonly crashes: number;
  readonly partitions: number;
  /** Homeservers that came back with an empty disk (`lostDisks`). */
  readonly lostDisks: number;
  /** Of those, lost while a group of the homeserver was changing membership (`lostDisksDuringChanges`). */
  readonly lostDisksDuringChanges: number;
  /** Voters removed from a group because they held no copy, to be added back with a new one. */
  readonly lostCopies: number;
  /** Co-signatures made when a commit's entry was stored, before it committed (see storedNextIndex). */
  readonly signaturesAhead: number;
  readonly violations: readonly ChannelSimViolation[];
}

interface Replica {
  readonly groupId: GroupId;
  readonly storage: MemoryStorage;
  readonly model: ChannelModel;
  raw: RawNode | undefined;
  wasMember: boolean;
  /** Index of the empty entry appended when this replica last became leader. */
  termStart: LogIndex;
  /** Tick it was created at a leader's request (a homeserver drops a copy that never became a member). */
  readonly hostedAt: number;
  /** The leader's commit index and last term when it asked for this copy (durable, as the homeserver keeps it; see Raft.catchUpFloor). */
  readonly catchUpFloor: CatchUpFloor;
  /** `index/term` of the last entry this copy looked at to sign at store time (each once, as the driver does). */
  signedAhead: string;
}

interface Homeserver {
  readonly id: NodeId;
  up: boolean;
  readonly groups: Map<GroupId, Replica>;
  /** It lost its disk and some channel of one of its members has no caught-up copy on it yet. */
  recovering: boolean;
}

type Packet =
  | { readonly kind: "raft"; readonly from: NodeId; readonly to: NodeId; readonly message: Message }
  | { readonly kind: "host"; readonly from: NodeId; readonly to: NodeId; readonly groupId: GroupId; readonly catchUpFloor: CatchUpFloor }
  /** "I hold no copy of this group" (see ChannelGroups.onUnhostedMessage). */
  | { readonly kind: "missing"; readonly from: NodeId; readonly to: NodeId; readonly groupId: GroupId }
  /** From a leader in `term` whose membership as of `confIndex` lacks `to`. */
  | { readonly kind: "leave"; readonly from: NodeId; readonly to: NodeId; readonly groupId: GroupId; readonly term: number; readonly confIndex: LogIndex; readonly lastIndex: LogIndex };

const electionTimeoutTicks = 10;

/** Ticks after which a copy made at a leader's request that never received an entry is dropped. */
const unjoinedCopyTicks = 300;

/** With lost disks: most bytes per Append (one entry, at least, always goes), and the runtime's limit on removing one lost copy again. */
const lostDiskMaxMessageBytes = 64;
const lostCopyRemovalIntervalTicks = 300;

/** Whether `log` holds a conf change entry after `applied`. */
function holdsConfChangeAfter(log: MemoryStorage, applied: LogIndex): boolean {
  if (log.lastIndex() <= applied) return false;
  return log.entries(Math.max(applied + 1, log.firstIndex()), log.lastIndex() + 1, Number.MAX_SAFE_INTEGER).some((e) => e.type === EntryType.ConfChange);
}

/** Runs one multi-group simulation. */
export function runChannelSimulation(options: ChannelSimOptions): ChannelSimResult {
  return new ChannelSimulator(options).run();
}

class ChannelSimulator {
  private readonly rng: Prng;
  private readonly homeservers: Homeserver[] = [];
  private readonly byId = new Map<NodeId, Homeserver>();
  private tickNow = 0;
  private readonly inFlight: Array<{ at: number; packet: Packet }> = [];
  /** Homeservers cut off from the rest, until the given tick. */
  private readonly isolatedUntil = new Map<NodeId, number>();
  private readonly violations: ChannelSimViolation[] = [];
  private readonly counts = { commitsAccepted: 0, messagesAccepted: 0, conflicts: 0, busyRefusals: 0, membershipChanges: 0, removals: 0, crashes: 0, partitions: 0, lostDisks: 0, lostDisksDuringChanges: 0, lostCopies: 0 };
  /** Tick a leader last removed a homeserver from a group because it held no copy (key: group/homeserver). */
  private readonly lostCopyRemovedAt = new Map<string, number>();
  private readonly channelIds: string[] = [];
  private deviceCounter = 0;
  private commandCounter = 0;
  // ---- the checks' memory ----
  private readonly leaders = new Map<string, NodeId>();
  private readonly appliedAt = new Map<string, string>();
  /** Per group: (index, conf) of every membership the first replica to apply it saw, in index order. */
  private readonly confHistory = new Map<GroupId, Array<{ index: LogIndex; conf: ConfState }>>();
  /** Per group and homeserver: the tick its last member's removal was first applied (until it is added again). */
  private readonly removedAt = new Map<string, number>();
  /** When each proposal was appended, by group/term/index. */
  private readonly appendedAt = new Map<string, number>();
  /** Whether each liveness probe commit was accepted, once applied. */
  private readonly probeOutcomes = new Map<string, boolean>();
  /**
   * Co-signatures, by group/epoch, then by statement (`index:command id`):
   * the voters it names and who signed it, at store time or at apply. Those
   * of a homeserver that lost its disk count on: it signs with a new key
   * afterwards, but a client that has not looked the key up again still
   * takes the old one.
   */
  private readonly signatures = new Map<string, Map<string, { readonly index: LogIndex; readonly voters: readonly NodeId[]; readonly signers: Set<NodeId> }>>();
  /** What the log decided at each group/index, once first applied: `epoch:command id` of an accepted commit, else "-". */
  private readonly decided = new Map<string, string>();
  /** Statements a quorum signed, by group/index. */
  private readonly certified = new Map<string, Set<string>>();
  private signaturesAhead = 0;

  private readonly faultScale: number;

  constructor(private readonly options: ChannelSimOptions) {
    this.rng = new Prng(options.seed);
    this.faultScale = options.faultScale ?? 1;
    const count = options.homeservers ?? 4;
    for (let i = 1; i <= count; i++) {
      const hs: Homeserver = { id: `hs${i}`, up: true, groups: new Map(), recovering: false };
      this.homeservers.push(hs);
      this.byId.set(hs.id, hs);
    }
  }

  run(): ChannelSimResult {
    const steps = this.options.steps ?? 2000;
    const channels = this.options.channels ?? 6;
    const faults = this.options.faults ?? true;
    for (; this.tickNow < steps && this.violations.length === 0; this.tickNow++) {
      if (this.channelIds.length < channels && this.tickNow % 20 === 0) this.createChannel();
      if (faults) this.injectFaults(steps);
      this.step(faults);
      this.workload();
    }
    if (this.violations.length === 0) this.liveness();
    return { seed: this.options.seed, ticks: this.tickNow, channels: this.channelIds.length, ...this.counts, signaturesAhead: this.signaturesAhead, violations: this.violations };
  }

  // ---- time ---------------------------------------------------------------------------------------

  private step(lossy: boolean): void {
    const due = this.inFlight.filter((p) => p.at <= this.tickNow);
    this.inFlight.splice(0, this.inFlight.length, ...this.inFlight.filter((p) => p.at > this.tickNow));
    for (const { packet } of due) this.deliver(packet, lossy);
    for (const hs of this.homeservers) {
      if (!hs.up) continue;
      for (const replica of hs.groups.values()) replica.raw?.tick();
    }
    for (const hs of this.homeservers) if (hs.up) for (const replica of [...hs.groups.values()]) this.handleReadies(hs, replica);
    for (const hs of this.homeservers) if (hs.up) for (const replica of [...hs.groups.values()]) this.reconcile(hs, replica);
    for (const hs of this.homeservers) {
      for (const replica of [...hs.groups.values()]) {
        if (!hs.up) continue;
        if (!replica.wasMember && replica.storage.lastIndex() === 0 && this.tickNow - replica.hostedAt > unjoinedCopyTicks) this.drop(hs, replica);
      }
    }
  }

  private send(packet: Packet, lossy: boolean): void {
    if (packet.kind === "raft") this.checkRemovedReceivesNothing(packet.to, packet.message);
    const delay = 1 + (lossy ? this.rng.int(3) : 0);
    this.inFlight.push({ at: this.tickNow + delay, packet });
  }

  private cut(a: NodeId, b: NodeId): boolean {
    return (this.isolatedUntil.get(a) ?? -1) > this.tickNow || (this.isolatedUntil.get(b) ?? -1) > this.tickNow;
  }

  private deliver(packet: Packet, lossy: boolean): void {
    const to = this.byId.get(packet.to)!;
    if (!to.up || this.cut(packet.from, packet.to) || (lossy && this.rng.chance(0.02 * this.faultScale))) return;
    if (packet.kind !== "raft") {
      const hosted = to.groups.get(packet.groupId);
      if (packet.kind === "host" && hosted === undefined) to.groups.set(packet.groupId, this.newReplica(to, packet.groupId, new MemoryStorage(), packet.catchUpFloor));
      if (packet.kind === "leave" && hosted !== undefined && this.believesLeave(hosted, packet)) this.drop(to, hosted);
      if (packet.kind === "missing" && hosted !== undefined) this.onMissingCopy(to, hosted, packet.from);
      return;
    }
    const message = packet.message;
    const replica = to.groups.get(message.groupId);
    if (replica === undefined) {
      if (this.options.lostDisks === true) this.send({ kind: "missing", from: to.id, to: packet.from, groupId: message.groupId }, lossy);
      return;
    }
    const raw = replica.raw!;
    if (raw.leader() === to.id && !isConfMember(raw.confState(), packet.from)) this.tellToLeave(to, replica, packet.from);
    this.guard(() => raw.step(message));
  }

  /** The homeserver's rule for leave notices (see believesLeaveNotice), on this copy. */
  private believesLeave(replica: Replica, notice: Extract<Packet, { kind: "leave" }>): boolean {
    const raw = replica.raw;
    if (raw === undefined) return false;
    const status = raw.status();
    return believesLeaveNotice(notice, { confState: raw.confState(), term: status.term, confIndex: replica.model.confIndex, lastIndex: status.lastIndex, lastTerm: status.lastTerm, floor: raw.catchUpFloor() });
  }

  private newReplica(hs: Homeserver, groupId: GroupId, storage: MemoryStorage, catchUpFloor: CatchUpFloor = noCatchUpFloor): Replica {
    const replica: Replica = { groupId, storage, model: new ChannelModel(), raw: undefined, wasMember: false, termStart: 0, hostedAt: this.tickNow, catchUpFloor, signedAhead: "" };
    this.startReplica(hs, replica);
    return replica;
  }

  private startReplica(hs: Homeserver, replica: Replica): void {
    const random = () => this.rng.float();
    replica.raw = new RawNode({
      ...defaultRaftConfig(hs.id, replica.groupId, replica.storage, random),
      electionTimeoutTicks,
      applied: replica.model.appliedIndex,
      catchUpFloor: replica.catchUpFloor,
      ...(this.options.lostDisks === true ? { maxMessageBytes: lostDiskMaxMessageBytes } : {}),
      onEvent: (event) => this.onEvent(hs, replica, event),
    });
  }

  private onEvent(hs: Homeserver, replica: Replica, event: RaftEvent): void {
    if (event.kind !== "became-leader") return;
    const key = `${replica.groupId}/${event.term}`;
    const existing = this.leaders.get(key);
    if (existing !== undefined && existing !== hs.id) this.violate("one-leader-per-term", `${replica.groupId} term ${event.term}: ${existing} and ${hs.id} both lead`);
    this.leaders.set(key, hs.id);
    replica.termStart = replica.raw?.status().lastIndex ?? replica.storage.lastIndex() + 1;
  }

  private handleReadies(hs: Homeserver, replica: Replica): void {
    for (let round = 0; round < 10 && replica.raw !== undefined && replica.raw.hasReady(); round++) {
      const raw = replica.raw;
      const ready = raw.ready();
      if (ready.snapshot !== null) throw new Error("channel sim: snapshots are not taken here");
      replica.storage.append(ready.entries);
      if (ready.hardState !== null) replica.storage.setHardState(ready.hardState);
      // Stored (storage is synchronous here): a commit right after what this copy applied is signed now.
      this.signStored(hs, replica);
      for (const m of ready.messages) this.send({ kind: "raft", from: hs.id, to: m.to, message: m }, true);
      for (const entry of ready.committedEntries) {
        this.apply(hs, replica, entry);
        if (!hs.groups.has(replica.groupId)) return; // dropped: it was removed from the group
      }
      raw.advance();
      this.signStored(hs, replica);
    }
  }

  /**
   * The runtime's signing at store time (RaftDriver.offerStoredNext,
   * ChannelGroupMachine.storedNext): the entry `storedNextIndex` names, if the
   * model would accept it as a commit next and this homeserver votes on it.
   */
  private signStored(hs: Homeserver, replica: Replica): void {
    const raw = replica.raw;
    const model = replica.model;
    if (raw === undefined || model.conf.votersOutgoing.length > 0) return;
    const storage = replica.storage;
    let index: LogIndex | undefined;
    if (this.options.broken === "sign-stored-any-term") {
      index = raw.leader() !== "" && model.appliedIndex < storage.lastIndex() && model.appliedIndex >= storage.firstIndex() - 1 ? model.appliedIndex + 1 : undefined;
    } else if (this.options.broken === "sign-past-applied") {
      const last = storage.lastIndex();
      index = raw.leader() !== "" && last > model.appliedIndex && storage.term(last) === storage.getHardState().term ? last : undefined;
    } else {
      index = storedNextIndex(storedLogView(storage, raw), model.appliedIndex);
    }
    if (index === undefined || replica.signedAhead === `${index}/${storage.term(index)}`) return;
    replica.signedAhead = `${index}/${storage.term(index)}`;
    const entry = storage.entries(index, index + 1, Number.MAX_SAFE_INTEGER)[0]!;
    const preview = model.preview(entry);
    if (preview === undefined || !preview.voters.includes(hs.id)) return;
    this.signaturesAhead++;
    this.sign(hs.id, replica.groupId, entry, preview.epoch, preview.voters);
  }

  /** `signer` co-signs the commit `entry` as accepted at `epoch`; a quorum of its voters makes a certificate, which must state what the log decides. */
  private sign(signer: NodeId, groupId: GroupId, entry: Entry, epoch: number, voters: readonly NodeId[]): void {
    const id = (JSON.parse(new TextDecoder().decode(entry.data)) as ChannelModelCommand).id;
    const statement = `${epoch}:${id}`;
    const byStatement = this.signatures.get(`${groupId}/${epoch}`) ?? new Map<string, { index: LogIndex; voters: readonly NodeId[]; signers: Set<NodeId> }>();
    this.signatures.set(`${groupId}/${epoch}`, byStatement);
    const key = `${entry.index}:${id}`;
    const tally = byStatement.get(key) ?? { index: entry.index, voters, signers: new Set<NodeId>() };
    byStatement.set(key, tally);
    tally.signers.add(signer);
    if ([...tally.signers].filter((s) => tally.voters.includes(s)).length < quorumSize(tally.voters.length)) return;
    const at = `${groupId}/${entry.index}`;
    const certified = this.certified.get(at) ?? new Set<string>();
    this.certified.set(at, certified);
    if (certified.has(statement)) return;
    certified.add(statement);
    const decided = this.decided.get(at);
    if (decided !== undefined && decided !== statement) this.violate("false-certificate", `${groupId} index ${entry.index}: a quorum of [${tally.voters}] signed ${statement}, but the log decided ${decided}`);
  }


  private apply(hs: Homeserver, replica: Replica, entry: Entry): void {
    const model = replica.model;
    let result: ChannelModelResult | undefined;
    const voters = model.conf.voters;
    if (this.options.broken === "no-busy" && entry.type === EntryType.Normal && entry.data.byteLength > 0 && model.created) {
      const saved = model.conf;
      model.conf = { ...saved, voters: homeserversOf(model.members) };
      result = model.apply(entry);
      model.conf = saved;
      if (result?.ok === true && result.kind === "commit") result = { ...result, voters: [...voters].sort() };
    } else {
      result = model.apply(entry);
    }
    const fingerprint = `${entry.term}/${entry.type}/${Buffer.from(entry.data).toString("base64")} => ${JSON.stringify(result ?? null)}`;
    const key = `${replica.groupId}/${entry.index}`;
    const first = this.appliedAt.get(key);
    if (first === undefined) {
      this.appliedAt.set(key, fingerprint);
      this.firstApplication(replica, entry, result);
    } else if (first !== fingerprint) {
      this.violate("state-machine-safety", `${replica.groupId} index ${entry.index}: ${hs.id} applied ${fingerprint.slice(0, 120)}, another replica ${first.slice(0, 120)}`);
    }
    if (result?.ok === true && result.kind === "commit" && result.voters.includes(hs.id)) this.sign(hs.id, replica.groupId, entry, result.epoch, result.voters);
    if (entry.type !== EntryType.ConfChange) return;
    // A copy does not drop itself on applying its own removal: a copy catching up replays old removals
    // before its latest addition, and the others may still need its vote to learn the removal committed.
    // It drops its copy when the group's leader tells it to (see tellToLeave).
    if (isConfMember(model.conf, hs.id)) replica.wasMember = true;
    this.tellRemoved(hs, replica);
  }

  /** The checks made once per entry, at its first application anywhere. */
  private firstApplication(replica: Replica, entry: Entry, result: ChannelModelResult | undefined): void {
    this.checkCertified(replica.groupId, entry, result);
    const history = this.confHistory.get(replica.groupId) ?? [];
    this.confHistory.set(replica.groupId, history);
    if (entry.type === EntryType.ConfChange) {
      history.push({ index: entry.index, conf: replica.model.conf });
      this.counts.membershipChanges++;
      for (const id of [...replica.model.conf.voters, ...replica.model.conf.learners]) this.removedAt.delete(`${replica.groupId}/${id}`);
      return;
    }
    if (result === undefined) return;
    const id = (JSON.parse(new TextDecoder().decode(entry.data)) as ChannelModelCommand).id;
    if (id.startsWith("probe-")) this.probeOutcomes.set(id, result.ok);
    if (!result.ok) {
      if (result.code === "conflict") this.counts.conflicts++;
      if (result.code === "busy") this.counts.busyRefusals++;
      return;
    }
    if (result.kind === "message") this.counts.messagesAccepted++;
    if (result.kind !== "commit") return;
    this.counts.commitsAccepted++;
    // The voters at this entry, from the memberships as first applied (independent of the replica's model).
    const atEntry = [...history].reverse().find((h) => h.index < entry.index)?.conf.voters ?? [];
    if (!followsMembers(result.voters, atEntry)) this.violate("certificate-voters", `${replica.groupId} epoch ${result.epoch}: the certificate names [${result.voters}] but the group's voters were [${atEntry}]`);
    if (!followsMembers(result.voters, result.before)) this.violate("certificate-voters", `${replica.groupId} epoch ${result.epoch}: the certificate names [${result.voters}] but the tree's homeservers were [${result.before}]`);
    for (const gone of result.before.filter((id) => !result.after.includes(id))) {
      this.removedAt.set(`${replica.groupId}/${gone}`, this.tickNow);
      this.counts.removals++;
    }
  }

  /** Records what the log decided at `entry`; every certificate a quorum signed for its index must state it. */
  private checkCertified(groupId: GroupId, entry: Entry, result: ChannelModelResult | undefined): void {
    const at = `${groupId}/${entry.index}`;
    const decided = result?.ok === true && result.kind === "commit" ? `${result.epoch}:${(JSON.parse(new TextDecoder().decode(entry.data)) as ChannelModelCommand).id}` : "-";
    this.decided.set(at, decided);
    for (const statement of this.certified.get(at) ?? []) {
      if (statement !== decided) this.violate("false-certificate", `${groupId} index ${entry.index}: a quorum signed ${statement}, but the log decided ${decided}`);
    }
  }

  /** The leader tells homeservers a membership change removed that they are out (they may not learn it from the log). */
  private tellRemoved(hs: Homeserver, replica: Replica): void {
    for (const id of replica.model.former) this.tellToLeave(hs, replica, id);
  }

  /**
   * The leader tells `to` to drop its copy, only when that is safe: the leader has applied every
   * membership change before its term and has none in flight (so its membership is the latest), `to` is
   * not in it, and no member of the channel is on `to` (so this leader will not add it back).
   */
  private tellToLeave(hs: Homeserver, replica: Replica, to: NodeId): void {
    const raw = replica.raw;
    if (raw === undefined || raw.leader() !== hs.id || to === hs.id || replica.model.appliedIndex < replica.termStart) return;
    if (isConfMember(raw.confState(), to) || homeserversOf(replica.model.members).includes(to)) return;
    const status = raw.status();
    this.send({ kind: "leave", from: hs.id, to, groupId: replica.groupId, term: status.term, confIndex: replica.model.confIndex, lastIndex: status.lastIndex }, true);
  }

  /** A homeserver stops hosting a group and deletes its copy. */
  private drop(hs: Homeserver, replica: Replica): void {
    hs.groups.delete(replica.groupId);
    replica.raw = undefined;
  }

  /** Nothing appended after a homeserver's last member was removed reaches it (until it is added again). */
  private checkRemovedReceivesNothing(to: NodeId, m: Message): void {
    if (m.type !== MessageType.Append) return;
    const removedAt = this.removedAt.get(`${m.groupId}/${to}`);
    if (removedAt === undefined) return;
    for (const e of m.entries) {
      if (e.type !== EntryType.Normal || e.data.byteLength === 0) continue;
      const appended = this.appendedAt.get(`${m.groupId}/${e.term}/${e.index}`);
      if (appended !== undefined && appended > removedAt) {
        this.violate("removed-homeserver-gets-nothing", `${m.groupId}: ${to} lost its last member at tick ${removedAt} but is sent entry ${e.index} appended at tick ${appended}`);
      }
    }
  }

  /** The leader's next membership step (the homeserver's reconciler). */
  private reconcile(hs: Homeserver, replica: Replica): void {
    const raw = replica.raw;
    if (raw === undefined || raw.leader() !== hs.id || !replica.model.created) return;
    // Former members may have missed the notice (lost, or sent before this leader could vouch for it).
    if (this.tickNow % 25 === 0) this.tellRemoved(hs, replica);
    const status = raw.status();
    const step = nextMembershipStep(homeserversOf(replica.model.members), status.confState, (id) => status.progress.get(id)?.match ?? 0, status.commit);
    if (step === undefined) return;
    if (step.kind === "add-learner" || step.kind === "remind-learner") {
      if (this.tickNow % 5 === 0 || step.kind === "add-learner") this.askToHost(hs, replica, step.homeserver);
      if (step.kind === "remind-learner") return;
    }
    // A voter removed because it lost its copy comes back as a voter at once (as the runtime does).
    const lostCopy = this.tickNow - (this.lostCopyRemovedAt.get(`${replica.groupId}/${step.homeserver}`) ?? -Infinity) < lostCopyRemovalIntervalTicks;
    const type = step.kind === "add-learner" ? (lostCopy ? ConfChangeType.AddVoter : ConfChangeType.AddLearner) : step.kind === "promote" ? ConfChangeType.AddVoter : ConfChangeType.RemoveNode;
    this.guard(() => raw.proposeConfChange({ steps: [{ type, nodeId: step.homeserver }], leaveJoint: false }));
  }

  /** Asks `to` to host the group, naming this copy's commit index and last term as the new copy's catch-up floor. */
  private askToHost(hs: Homeserver, replica: Replica, to: NodeId): void {
    const status = replica.raw?.status();
    if (status === undefined) return;
    // A leader asks only once its term's first entry is applied (as the runtime does).
    if (status.leader === hs.id && replica.model.appliedIndex < replica.termStart) return;
    const catchUpFloor = this.options.broken === "no-catch-up-floor" ? noCatchUpFloor : { index: status.commit, term: status.lastTerm };
    this.send({ kind: "host", from: hs.id, to, groupId: replica.groupId, catchUpFloor }, true);
  }

  /** `from` said it holds no copy of the group: the runtime's rules (lostCopyAction), on `hs`'s copy. */
  private onMissingCopy(hs: Homeserver, replica: Replica, from: NodeId): void {
    const raw = replica.raw;
    if (raw === undefined || !hs.up) return;
    const action = lostCopyAction({
      selfId: hs.id,
      from,
      leads: raw.leader() === hs.id,
      confState: raw.confState(),
      catchingUp: raw.catchingUp(),
      holdsUnappliedConfChange: raw.holdsUnappliedConfChange(),
    });
    if (action === "host") this.askToHost(hs, replica, from);
    if (action !== "remove") return;
    const key = `${replica.groupId}/${from}`;
    if (this.tickNow - (this.lostCopyRemovedAt.get(key) ?? -Infinity) < lostCopyRemovalIntervalTicks) return;
    this.lostCopyRemovedAt.set(key, this.tickNow);
    this.counts.lostCopies++;
    this.guard(() => raw.proposeConfChange({ steps: [{ type: ConfChangeType.RemoveNode, nodeId: from }], leaveJoint: false }));
  }

  // ---- the workload -------------------------------------------------------------------------------

  private createChannel(): void {
    const creator = this.rng.pick(this.homeservers.filter((h) => h.up));
    if (creator === undefined) return;
    const channelId = `c${this.channelIds.length}`;
    const groupId = `channel/${channelId}`;
    const storage = new MemoryStorage([creator.id]);
    const replica = this.newReplica(creator, groupId, storage);
    creator.groups.set(groupId, replica);
    this.channelIds.push(channelId);
    replica.raw!.campaign();
    this.pending.push({ groupId, command: { t: "create", id: `create-${channelId}`, members: [[this.newDevice(creator.id), creator.id]] } });
  }

  /** Commands waiting for their channel's leader to admit them. */
  private readonly pending: Array<{ groupId: GroupId; command: ChannelModelCommand }> = [];

  private newDevice(homeserver: NodeId): string {
    return `d${this.deviceCounter++}@${homeserver}`;
  }

  /** The replica leading `groupId` now, if one is up. */
  private leaderOf(groupId: GroupId): { hs: Homeserver; replica: Replica } | undefined {
    for (const hs of this.homeservers) {
      const replica = hs.groups.get(groupId);
      if (hs.up && replica?.raw?.leader() === hs.id) return { hs, replica };
    }
    return undefined;
  }

  /** Whether the leader admits a command now (what ChannelGroups.admits decides). */
  private admits(replica: Replica): boolean {
    if (this.options.broken === "admit-unsettled" || this.options.broken === "no-busy") return true;
    const created = replica.model.created;
    return replica.model.appliedIndex >= replica.termStart && (!created || membershipSettled(replica.model.conf, homeserversOf(replica.model.members)));
  }

  private workload(): void {
    // Proposals waiting for admission first.
    for (let i = 0; i < this.pending.length; i++) {
      const { groupId, command } = this.pending[i]!;
      const leader = this.leaderOf(groupId);
      if (leader === undefined || !this.admits(leader.replica)) continue;
      this.propose(leader, command);
      this.pending.splice(i--, 1);
    }
    // A bounded queue; a channel's creation is never dropped (it would never exist).
    while (this.pending.length > 50) {
      const oldest = this.pending.findIndex((p) => p.command.t !== "create");
      if (oldest < 0) break;
      this.pending.splice(oldest, 1);
    }
    if (this.channelIds.length === 0 || !this.rng.chance(0.5)) return;
    const groupId = `channel/${this.rng.pick(this.channelIds)}`;
    const leader = this.leaderOf(groupId);
    if (leader === undefined || !leader.replica.model.created) return;
    const model = leader.replica.model;
    const epoch = model.epoch - (this.rng.chance(0.1) ? 1 : 0);
    const id = `x${this.commandCounter++}`;
    const roll = this.rng.float();
    let command: ChannelModelCommand;
    if (roll < 0.4) command = { t: "message", id, epoch };
    else if (roll < 0.6 || model.members.size >= 6) {
      command = { t: "commit", id, epoch, add: [], remove: model.members.size > 1 ? [this.rng.pick([...model.members.keys()])] : [] };
    } else {
      const homeserver = this.rng.pick(this.homeservers).id;
      command = { t: "commit", id, epoch, add: [[this.newDevice(homeserver), homeserver]], remove: [] };
    }
    // A rival built on the same epoch, now and then.
    if (command.t === "commit" && this.rng.chance(0.15)) this.pending.push({ groupId, command: { t: "commit", id: `${id}-rival`, epoch, add: [], remove: [] } });
    if (this.admits(leader.replica)) this.propose(leader, command);
    else this.pending.push({ groupId, command });
  }

  private propose(leader: { hs: Homeserver; replica: Replica }, command: ChannelModelCommand): void {
    const raw = leader.replica.raw!;
    const outcome = raw.propose(encodeModelCommand(command));
    if (outcome.ok) this.appendedAt.set(`${leader.replica.groupId}/${outcome.term}/${outcome.index}`, this.tickNow);
  }

  // ---- faults -------------------------------------------------------------------------------------

  private injectFaults(steps: number): void {
    if (this.tickNow > steps - 100) return;
    for (const hs of this.homeservers) {
      if (hs.up || !this.rng.chance(0.05)) continue;
      const loss = this.options.lostDisks === true && this.rng.chance(0.3) ? this.diskLoss(hs) : "no";
      if (loss !== "no") {
        hs.groups.clear();
        hs.recovering = true;
        this.counts.lostDisks++;
        if (loss === "during-change") this.counts.lostDisksDuringChanges++;
      }
      this.restart(hs);
    }
    for (const hs of this.homeservers) if (hs.recovering && this.recovered(hs)) hs.recovering = false;
    if (this.rng.chance(0.004 * this.faultScale)) {
      const victim = this.rng.pick(this.homeservers);
      if (victim.up && this.homeservers.filter((h) => h.up).length > 1) this.crash(victim);
    }
    if (this.rng.chance(0.004 * this.faultScale)) {
      const victim = this.rng.pick(this.homeservers);
      this.isolatedUntil.set(victim.id, this.tickNow + 20 + this.rng.int(60));
      this.counts.partitions++;
    }
  }

  /**
   * Whether `hs` may lose its disk now. Never while another homeserver is
   * still recovering from a lost one (two lost copies of one group may be all
   * its committed entries), nor when `hs` is the only voter of a group (the
   * last membership applied anywhere). "settled" when no group of its is
   * changing membership (the latest membership follows the members, every
   * copy applied it, and none holds or is being sent a later one);
   * "during-change" otherwise, allowed only with `lostDisksDuringChanges`
   * (see "Open" in ARCHITECTURE.md's lost data directory section).
   */
  private diskLoss(hs: Homeserver): "no" | "settled" | "during-change" {
    if (this.homeservers.some((other) => other !== hs && other.recovering)) return "no";
    let settled = true;
    for (const groupId of hs.groups.keys()) {
      const latest = this.confHistory.get(groupId)?.at(-1);
      if (latest === undefined || (latest.conf.voters.length === 1 && latest.conf.voters[0] === hs.id)) return "no";
      if (settled && !this.membershipAtRest(groupId, latest)) settled = false;
    }
    if (settled) return "settled";
    return this.options.lostDisksDuringChanges === true ? "during-change" : "no";
  }

  /** Whether the group is not changing membership: see {@link diskLoss}. */
  private membershipAtRest(groupId: GroupId, latest: { index: LogIndex; conf: ConfState }): boolean {
    // Every copy applied the latest membership (a copy that has not may not know it is a voter, and the
    // one that lost its disk may be the only one holding the change).
    for (const other of this.homeservers) {
      const copy = other.groups.get(groupId);
      if (copy !== undefined && (copy.model.appliedIndex < latest.index || holdsConfChangeAfter(copy.storage, copy.model.appliedIndex))) return false;
    }
    const inFlight = (p: Packet) => p.kind === "raft" && p.message.groupId === groupId && p.message.entries.some((e) => e.type === EntryType.ConfChange);
    if (this.inFlight.some(({ packet }) => inFlight(packet))) return false;
    // Nor one about to start: the group follows its members (as the most advanced copy knows them).
    const copies = this.homeservers.flatMap((other) => other.groups.get(groupId) ?? []);
    const advanced = copies.reduce((a, b) => (b.model.appliedIndex > a.model.appliedIndex ? b : a));
    return membershipSettled(latest.conf, homeserversOf(advanced.model.members));
  }

  /** Whether every channel with a member on `hs` has a copy on it that caught up (not catching up, at its leader's applied index). */
  private recovered(hs: Homeserver): boolean {
    for (const channelId of this.channelIds) {
      const groupId = `channel/${channelId}`;
      const leader = this.leaderOf(groupId);
      if (leader === undefined) return false;
      if (!homeserversOf(leader.replica.model.members).includes(hs.id)) continue;
      const copy = hs.groups.get(groupId);
      if (copy?.raw === undefined || copy.raw.catchingUp() || copy.model.appliedIndex < leader.replica.model.appliedIndex) return false;
    }
    return true;
  }

  private crash(hs: Homeserver): void {
    hs.up = false;
    for (const replica of hs.groups.values()) replica.raw = undefined;
    this.counts.crashes++;
  }

  private restart(hs: Homeserver): void {
    hs.up = true;
    for (const replica of hs.groups.values()) this.startReplica(hs, replica);
  }

  // ---- liveness -----------------------------------------------------------------------------------

  private liveness(): void {
    for (const hs of this.homeservers) if (!hs.up) this.restart(hs);
    this.isolatedUntil.clear();
    this.pending.splice(0, this.pending.length, ...this.pending.filter((p) => p.command.t === "create"));
    const limit = this.tickNow + (this.options.livenessTicks ?? 1500);
    const probes = new Map<GroupId, string>();
    for (; this.tickNow < limit && this.violations.length === 0; this.tickNow++) {
      this.step(false);
      let done = true;
      for (const channelId of this.channelIds) {
        const groupId = `channel/${channelId}`;
        const leader = this.leaderOf(groupId);
        if (leader === undefined || !this.admits(leader.replica)) {
          done = false;
          continue;
        }
        if (!leader.replica.model.created) {
          // The creation was lost with a crashed leader before it committed: the creator sends it again.
          if (this.tickNow % 50 === 0) this.propose(leader, { t: "create", id: `create-${channelId}-${this.tickNow}`, members: [[this.newDevice(leader.hs.id), leader.hs.id]] });
          done = false;
          continue;
        }
        const probe = probes.get(groupId);
        if (probe === undefined || this.probeOutcomes.get(probe) === false || (!this.probeOutcomes.has(probe) && this.tickNow - Number(probe.split("-").at(-1)) > 100)) {
          // A probe lost with a leader change, or refused, is sent again.
          const id = `probe-${channelId}-${this.tickNow}`;
          probes.set(groupId, id);
          this.propose(leader, { t: "commit", id, epoch: leader.replica.model.epoch, add: [], remove: [] });
          done = false;
          continue;
        }
        if (!this.settledEverywhere(groupId, leader.replica)) done = false;
      }
      if (done && probes.size === this.channelIds.length && [...probes.values()].every((id) => this.probeOutcomes.get(id) === true)) return;
    }
    if (this.violations.length === 0) {
      const states = this.channelIds.map((channelId) => {
        const groupId = `channel/${channelId}`;
        const leader = this.leaderOf(groupId);
        const copies = this.homeservers.filter((h) => h.groups.has(groupId)).map((h) => {
          const r = h.groups.get(groupId)!;
          return `${h.id}(voters ${r.model.conf.voters}; learners ${r.model.conf.learners}; applied ${r.model.appliedIndex}; leader ${r.raw?.leader() ?? "-"})`;
        });
        const members = leader === undefined ? "?" : homeserversOf(leader.replica.model.members).join(",");
        return `${channelId}: members on [${members}], admits ${leader === undefined ? "-" : this.admits(leader.replica)}, copies ${copies.join(" ")}`;
      });
      this.violate("liveness", `the healed cluster did not settle every channel and accept a commit in each within ${this.options.livenessTicks ?? 1500} ticks: ${states.join(" | ")}`);
    }
  }

  /** Every member homeserver hosts the group with the same membership; nobody else hosts it. */
  private settledEverywhere(groupId: GroupId, leader: Replica): boolean {
    const wanted = homeserversOf(leader.model.members);
    for (const hs of this.homeservers) {
      const replica = hs.groups.get(groupId);
      if (wanted.includes(hs.id) !== (replica !== undefined)) return false;
      if (replica !== undefined && (!membershipSettled(replica.model.conf, wanted) || replica.model.appliedIndex < leader.model.appliedIndex)) return false;
    }
    return true;
  }

  // ---- reporting ----------------------------------------------------------------------------------

  private violate(check: string, message: string): void {
    this.violations.push({ seed: this.options.seed, check, message, tick: this.tickNow });
  }

  private guard(action: () => void): void {
    try {
      action();
    } catch (error) {
      this.violate("core-error", error instanceof Error ? error.message : String(error));
    }
  }
}


