/**
 * The framing of every entry in the cluster group's log: a version byte (1),
 * an op byte naming the command kind, then the command's own encoding. One
 * place for it, so the state machine's dispatch and every command module
 * agree on it.
 */

/** The version byte every entry payload starts with. */
export const entryPayloadVersion = 1;

/** The payload of a command of kind `op` whose encoding is `body`. */
export function entryPayload(op: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + body.byteLength);
  out[0] = entryPayloadVersion;
  out[1] = op;
  out.set(body, 2);
  return out;
}

/** The body of `payload` when it is of kind `op` (and this version); undefined otherwise. */
export function entryBody(payload: Uint8Array, op: number): Uint8Array | undefined {
  return payload.byteLength >= 2 && payload[0] === entryPayloadVersion && payload[1] === op ? payload.subarray(2) : undefined;
}
