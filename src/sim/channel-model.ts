/**
 * The channel state machine of the multi-group simulator, without MLS: a
 * channel's members (device -> sponsoring homeserver) and epoch, commits that
 * add and remove members, and messages. It decides exactly as the real
 * ChannelStateMachine does what depends on the group (src/channel/
 * group-membership.ts): a command is applied only while the group's voters
 * are the members' homeservers ("busy" otherwise), a commit only on the
 * current epoch ("conflict" otherwise), and an accepted commit's
 * certificate names the group's voters at that entry. The group's
 * membership is followed from its conf-change entries with the core's own
 * function. Deterministic; encodes to bytes so replicas can be compared.
 */
import { followsMembers } from "../channel/group-membership.ts";
import { applyConfChange, confMembers, decodeConfChange } from "../raft/conf-change.ts";
import { emptyConfState, EntryType, type ConfState, type Entry, type LogIndex, type NodeId } from "../raft/types.ts";

/** A command of the model, as JSON in an entry's data. */
export type ChannelModelCommand =
  | { readonly t: "create"; readonly id: string; readonly members: ReadonlyArray<readonly [string, NodeId]> }
  | { readonly t: "commit"; readonly id: string; readonly epoch: number; readonly add: ReadonlyArray<readonly [string, NodeId]>; readonly remove: readonly string[] }
  | { readonly t: "message"; readonly id: string; readonly epoch: number };

/** What applying one entry decided (identical on every replica). */
export type ChannelModelResult =
  | { readonly ok: true; readonly kind: "created" | "message" }
  | { readonly ok: true; readonly kind: "commit"; readonly epoch: number; readonly voters: readonly NodeId[]; readonly before: readonly NodeId[]; readonly after: readonly NodeId[] }
  | { readonly ok: false; readonly code: "busy" | "conflict" | "invalid" };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeModelCommand(command: ChannelModelCommand): Uint8Array {
  return encoder.encode(JSON.stringify(command));
}

/** The homeservers of a member list, sorted. */
export function homeserversOf(members: ReadonlyMap<string, NodeId>): NodeId[] {
  return [...new Set(members.values())].sort();
}

/** One replica's applied channel state. */
export class ChannelModel {
  epoch = 0;
  created = false;
  readonly members = new Map<string, NodeId>();
  conf: ConfState = emptyConfState;
  /** Index of the last membership change applied. */
  confIndex: LogIndex = 0;
  /** Homeservers a membership change removed and none added back: they may still hold a copy. */
  readonly former = new Set<NodeId>();
  appliedIndex: LogIndex = 0;

  /**
   * What applying `entry` next would accept, without applying it: the epoch
   * and voters of the commit's certificate, or undefined when it is no
   * accepted commit (the runtime's ChannelStateMachine.previewCommit).
   */
  preview(entry: Entry): { readonly epoch: number; readonly voters: readonly NodeId[] } | undefined {
    if (entry.type !== EntryType.Normal || entry.data.byteLength === 0 || !this.created) return undefined;
    const command = JSON.parse(decoder.decode(entry.data)) as ChannelModelCommand;
    if (command.t !== "commit" || command.epoch !== this.epoch || !followsMembers(this.conf.voters, homeserversOf(this.members))) return undefined;
    return { epoch: this.epoch, voters: [...this.conf.voters].sort() };
  }

  /** Applies one committed entry; returns the result of a command entry (undefined for others). */
  apply(entry: Entry): ChannelModelResult | undefined {
    this.appliedIndex = entry.index;
    if (entry.type === EntryType.ConfChange) {
      const outcome = applyConfChange(this.conf, decodeConfChange(entry.data));
      if (outcome.ok) {
        const now = new Set(confMembers(outcome.confState));
        for (const id of confMembers(this.conf)) if (!now.has(id)) this.former.add(id);
        for (const id of now) this.former.delete(id);
        this.conf = outcome.confState;
        this.confIndex = entry.index;
      }
      return undefined;
    }
    if (entry.data.byteLength === 0) return undefined;
    const command = JSON.parse(decoder.decode(entry.data)) as ChannelModelCommand;
    if (command.t === "create") {
      if (this.created) return { ok: false, code: "invalid" };
      this.created = true;
      for (const [device, homeserver] of command.members) this.members.set(device, homeserver);
      return { ok: true, kind: "created" };
    }
    if (!this.created) return { ok: false, code: "invalid" };
    if (!followsMembers(this.conf.voters, homeserversOf(this.members))) return { ok: false, code: "busy" };
    if (command.epoch !== this.epoch) return { ok: false, code: "conflict" };
    if (command.t === "message") return { ok: true, kind: "message" };
    const before = homeserversOf(this.members);
    for (const device of command.remove) this.members.delete(device);
    for (const [device, homeserver] of command.add) this.members.set(device, homeserver);
    if (this.members.size === 0) {
      // The last member cannot leave by a commit; refused like an invalid MLS commit, state restored.
      throw new Error("model: a commit removed every member (the workload never sends one)");
    }
    const voters = [...this.conf.voters].sort();
    this.epoch++;
    return { ok: true, kind: "commit", epoch: this.epoch - 1, voters, before, after: homeserversOf(this.members) };
  }
}
