/**
 * The simulator's replicated state machine: a running hash over every applied
 * entry. Two nodes hold equal hashes at an index exactly when they applied
 * the same entries, so comparing hashes checks State Machine Safety cheaply.
 */
import { assert } from "../raft/assert.ts";
import type { Entry, LogIndex } from "../raft/types.ts";
import type { AppliedState } from "./sim-disk.ts";

/** FNV-1a over an entry's type and payload: its identity, together with its index and term. */
export function entryHash(entry: Entry): number {
  let h = 0x811c9dc5 ^ entry.type;
  const data = entry.data;
  for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i]!, 0x01000193);
  return h >>> 0;
}

/** The state after applying `entry` to `state`: index advances, hash folds in (index, term, payload). */
export function applyEntry(state: AppliedState, entry: Entry): AppliedState {
  let h = Math.imul(state.hash ^ entryHash(entry), 0x9e3779b1);
  h = Math.imul(h ^ entry.index, 0x85ebca6b);
  h = Math.imul(h ^ entry.term, 0xc2b2ae35);
  return { index: entry.index, hash: (h ^ (h >>> 15)) >>> 0 };
}

/** Snapshot data: the applied index (two 32-bit halves) and the hash, 12 bytes. */
export function encodeAppliedState(state: AppliedState): Uint8Array {
  const bytes = new Uint8Array(12);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, Math.floor(state.index / 2 ** 32));
  view.setUint32(4, state.index >>> 0);
  view.setUint32(8, state.hash);
  return bytes;
}

/** Reverses {@link encodeAppliedState}; an empty snapshot (bootstrap) is the zero state at `index`. */
export function decodeAppliedState(data: Uint8Array, index: LogIndex): AppliedState {
  if (data.byteLength === 0) return { index, hash: 0 };
  assert(data.byteLength === 12, `simulator snapshot data is ${data.byteLength} bytes, expected 12`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return { index: view.getUint32(0) * 2 ** 32 + view.getUint32(4), hash: view.getUint32(8) };
}
