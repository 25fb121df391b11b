/**
 * Test groups: plain Raft groups with the {@link KvStateMachine}, created on
 * an operator's request (AdminService.CreateTestGroups on the peer port,
 * behind the operator certificate) to test and measure many groups in one
 * process before per-channel groups use the same machinery. Not part of the
 * client API. Every homeserver named as a voter must be asked to create the
 * same groups; each then starts as an initial member (bootstrap entry), and
 * the groups elect leaders and quiesce like any other.
 */
import type { Logger } from "pino";
import type { GroupId, NodeId } from "../raft/types.ts";
import type { StorageEngine } from "../storage/storage-engine.ts";
import { KvStateMachine } from "./kv-state-machine.ts";
import type { Applied, RaftDriver } from "./raft-driver.ts";
import { UnknownGroupError } from "./errors.ts";

/** Every test group's id starts with this. */
export const testGroupPrefix = "test/";
/** Most test groups one homeserver hosts. */
export const testGroupsMax = 200_000;
/** Groups created per synced storage batch. */
const createBatchGroups = 2000;

/** Which of `voters` campaigns first for `groupId` (FNV-1a of the id): spreads initial leaders evenly. */
export function initialLeaderIndex(groupId: GroupId, voters: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < groupId.length; i++) hash = Math.imul(hash ^ groupId.charCodeAt(i), 0x01000193) >>> 0;
  return hash % voters;
}

/** The id of test group number `n`. */
export function testGroupId(n: number): GroupId {
  return `${testGroupPrefix}${n}`;
}

/** What one creation did. */
export interface CreatedTestGroups {
  /** Groups created by this call (those already hosted are skipped). */
  readonly created: number;
  /** Test groups hosted now. */
  readonly total: number;
}

/** The test groups of one homeserver. */
export class TestGroups {
  private readonly machines = new Map<GroupId, KvStateMachine>();

  constructor(
    private readonly selfId: NodeId,
    private readonly engine: StorageEngine,
    private readonly driver: RaftDriver,
    private readonly logger: Logger,
  ) {}

  /** Hosts again the test groups stored in the database (after a restart); returns how many. */
  async reopen(): Promise<number> {
    const ids = (await this.engine.listGroups()).filter((id) => id.startsWith(testGroupPrefix));
    for (const id of ids) {
      const store = await this.engine.openGroup(id);
      const machine = new KvStateMachine(store);
      await this.driver.addGroup(store, machine, { quiesce: true, balanceLeadership: true });
      this.machines.set(id, machine);
    }
    if (ids.length > 0) this.logger.info({ groups: ids.length }, "test groups reopened");
    return ids.length;
  }

  /**
   * Creates test groups number `first` .. `first + count - 1` with initial
   * voters `voters` (which must include this homeserver), skipping those
   * already hosted. Callers validate the arguments (see the admin service).
   */
  async create(first: number, count: number, voters: readonly NodeId[]): Promise<CreatedTestGroups> {
    const ids: GroupId[] = [];
    for (let n = first; n < first + count; n++) if (!this.machines.has(testGroupId(n))) ids.push(testGroupId(n));
    if (this.machines.size + ids.length > testGroupsMax) throw new RangeError(`at most ${testGroupsMax} test groups per homeserver`);
    if (!voters.includes(this.selfId)) throw new RangeError(`the voters must include this homeserver (${this.selfId})`);
    for (let start = 0; start < ids.length; start += createBatchGroups) {
      const stores = await this.engine.createGroups(ids.slice(start, start + createBatchGroups), voters);
      for (const store of stores) {
        const machine = new KvStateMachine(store);
        await this.driver.addGroup(store, machine, { quiesce: true, balanceLeadership: true });
        this.machines.set(store.groupId, machine);
        // One voter per group, spread by id, campaigns at once: thousands of new groups do not all
        // time out and campaign against each other, and leadership starts out balanced.
        if (voters[initialLeaderIndex(store.groupId, voters.length)] === this.selfId) this.driver.campaign(store.groupId);
      }
    }
    this.logger.info({ created: ids.length, total: this.machines.size }, "test groups created");
    return { created: ids.length, total: this.machines.size };
  }

  /** Whether `groupId` is a test group hosted here. */
  has(groupId: GroupId): boolean {
    return this.machines.has(groupId);
  }

  /** Proposes a Put to test group `groupId` (on its leader; NotLeaderError elsewhere). */
  put(groupId: GroupId, data: Uint8Array): Promise<Applied> {
    if (!this.machines.has(groupId)) throw new UnknownGroupError(groupId);
    return this.driver.propose(groupId, data);
  }

  /** The value under `key` in test group `groupId` as applied here (not a linearizable read). */
  get(groupId: GroupId, key: Uint8Array): Promise<Uint8Array | undefined> {
    const machine = this.machines.get(groupId);
    if (machine === undefined) throw new UnknownGroupError(groupId);
    return machine.get(key);
  }

  /** The test groups this homeserver leads now. */
  leading(): GroupId[] {
    return [...this.machines.keys()].filter((id) => this.driver.leaderOf(id) === this.selfId);
  }

  /** How many test groups are hosted. */
  count(): number {
    return this.machines.size;
  }
}
