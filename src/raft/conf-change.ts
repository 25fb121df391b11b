import { ConfChangeType, type ConfChange, type ConfState, type NodeId } from "./types.ts";

/** Longest node id a conf change may carry, in UTF-8 bytes. */
export const nodeIdBytesMax = 64;
/** Most steps one conf change may carry. */
export const confChangeStepsMax = 16;

const formatVersion = 1;
const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

/** Thrown by {@link decodeConfChange} on bytes that are not a valid conf change. */
export class ConfChangeDecodeError extends Error {
  constructor(reason: string) {
    super(`malformed conf change: ${reason}`);
    this.name = "ConfChangeDecodeError";
  }
}

/**
 * Encodes a conf change as: version u8, leaveJoint u8, step count u8, then per
 * step: type u8, id length u8, id bytes (UTF-8).
 */
export function encodeConfChange(change: ConfChange): Uint8Array {
  const ids = change.steps.map((step) => utf8.encode(step.nodeId));
  const size = 3 + ids.reduce((total, id) => total + 2 + id.byteLength, 0);
  const out = new Uint8Array(size);
  out[0] = formatVersion;
  out[1] = change.leaveJoint ? 1 : 0;
  out[2] = change.steps.length;
  let at = 3;
  change.steps.forEach((step, i) => {
    const id = ids[i]!;
    out[at++] = step.type;
    out[at++] = id.byteLength;
    out.set(id, at);
    at += id.byteLength;
  });
  return out;
}

/** Decodes and validates a conf change; throws {@link ConfChangeDecodeError} on malformed input. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  if (data.byteLength < 3) throw new ConfChangeDecodeError("too short");
  if (data[0] !== formatVersion) throw new ConfChangeDecodeError(`unknown version ${data[0]}`);
  if (data[1]! > 1) throw new ConfChangeDecodeError("bad leaveJoint flag");
  const count = data[2]!;
  if (count > confChangeStepsMax) throw new ConfChangeDecodeError(`${count} steps, at most ${confChangeStepsMax}`);
  const steps: ConfChange["steps"][number][] = [];
  let at = 3;
  for (let i = 0; i < count; i++) {
    if (at + 2 > data.byteLength) throw new ConfChangeDecodeError("truncated step");
    const type = data[at++]!;
    const length = data[at++]!;
    if (type < ConfChangeType.AddVoter || type > ConfChangeType.RemoveNode) throw new ConfChangeDecodeError(`unknown step type ${type}`);
    if (length === 0 || length > nodeIdBytesMax || at + length > data.byteLength) throw new ConfChangeDecodeError("bad node id length");
    let nodeId: NodeId;
    try {
      nodeId = utf8Strict.decode(data.subarray(at, at + length));
    } catch {
      throw new ConfChangeDecodeError("node id is not UTF-8");
    }
    at += length;
    steps.push({ type, nodeId });
  }
  if (at !== data.byteLength) throw new ConfChangeDecodeError("trailing bytes");
  return { steps, leaveJoint: data[1] === 1 };
}

/** The membership after a change, or why the change is refused. */
export type ConfChangeOutcome = { ok: true; confState: ConfState; joint: boolean } | { ok: false; reason: string };

/**
 * Applies a membership change to `current`. A change of at most one voter
 * applies directly (always safe: any two majorities of configurations that
 * differ by one voter intersect); any other enters a joint configuration in
 * which both the old and the new voters must agree, until it is left.
 * Deterministic: every node reaches the same result from the same log.
 */
export function applyConfChange(current: ConfState, change: ConfChange): ConfChangeOutcome {
  const joint = current.votersOutgoing.length > 0;
  if (change.leaveJoint) {
    if (change.steps.length > 0) return { ok: false, reason: "leaving a joint configuration takes no steps" };
    if (!joint) return { ok: false, reason: "not in a joint configuration" };
    const learners = [...new Set([...current.learners, ...current.learnersNext])];
    return { ok: true, joint: false, confState: { voters: current.voters, votersOutgoing: [], learners, learnersNext: [] } };
  }
  if (joint) return { ok: false, reason: "a joint configuration must be left first" };
  if (change.steps.length === 0) return { ok: false, reason: "no steps" };

  const voters = new Set(current.voters);
  const learners = new Set(current.learners);
  for (const { type, nodeId } of change.steps) {
    if (type === ConfChangeType.AddVoter) {
      learners.delete(nodeId);
      voters.add(nodeId);
    } else if (type === ConfChangeType.AddLearner) {
      voters.delete(nodeId);
      learners.add(nodeId);
    } else {
      voters.delete(nodeId);
      learners.delete(nodeId);
    }
  }
  if (voters.size === 0) return { ok: false, reason: "removes every voter" };
  const changedVoters = symmetricDifferenceSize(new Set(current.voters), voters);
  // From no voters at all (a group's bootstrap entry) there is no old majority to keep.
  if (changedVoters <= 1 || current.voters.length === 0) {
    return { ok: true, joint: false, confState: { voters: [...voters], votersOutgoing: [], learners: [...learners], learnersNext: [] } };
  }
  // Joint: a demoted voter stays in the outgoing half and becomes a learner only when it is left.
  const learnersNext = [...learners].filter((id) => current.voters.includes(id));
  const learnersNow = [...learners].filter((id) => !current.voters.includes(id));
  return {
    ok: true,
    joint: true,
    confState: { voters: [...voters], votersOutgoing: [...current.voters], learners: learnersNow, learnersNext },
  };
}

/**
 * The membership after applying a conf change entry's data to `current`, or
 * undefined when the change is malformed or refused: such an entry applies
 * as a no-op, identically everywhere.
 */
export function confAfterEntry(current: ConfState, data: Uint8Array): ConfState | undefined {
  let change: ConfChange;
  try {
    change = decodeConfChange(data);
  } catch {
    return undefined;
  }
  const outcome = applyConfChange(current, change);
  return outcome.ok ? outcome.confState : undefined;
}

function symmetricDifferenceSize(a: ReadonlySet<NodeId>, b: ReadonlySet<NodeId>): number {
  let size = 0;
  for (const id of a) if (!b.has(id)) size++;
  for (const id of b) if (!a.has(id)) size++;
  return size;
}

/** Every node of a membership: voters of both halves and learners. */
export function confMembers(conf: ConfState): NodeId[] {
  return [...new Set([...conf.voters, ...conf.votersOutgoing, ...conf.learners, ...conf.learnersNext])];
}

/** Whether `id` is a voter (of either half) or a learner of `conf`. */
export function isConfMember(conf: ConfState, id: NodeId): boolean {
  return conf.voters.includes(id) || conf.votersOutgoing.includes(id) || conf.learners.includes(id) || conf.learnersNext.includes(id);
}
