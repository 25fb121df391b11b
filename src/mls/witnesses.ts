/**
 * Witness homeservers of a channel: homeservers that vote in its Raft group
 * (and so count in its certificates) without sponsoring any member, so that
 * a channel spread over two homeservers can lose one and keep ordering.
 *
 * They are named in a GroupContext extension of the channel's MLS group, set
 * by its creator: every member holds the list in its own MLS state, so no
 * homeserver can make a client count a voter it did not agree to. The list
 * is fixed for the channel's life (homeservers refuse a commit that changes
 * it). The extension type is from the private-use range (RFC 9420, 17.3), so
 * the KeyPackages of devices that may join such a channel list it among their
 * capabilities.
 */

/** The GroupContext extension type that names a channel's witnesses. */
export const witnessesExtensionType = 0xf0e5;
/** Most witnesses a channel may name. */
export const witnessesMax = 4;

const homeserverIdPattern = /^[A-Za-z0-9._-]{1,64}$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The extension's data: the homeserver ids, sorted, one per line. */
export function encodeWitnesses(ids: readonly string[]): Uint8Array {
  const sorted = [...new Set(ids)].sort();
  for (const id of sorted) if (!homeserverIdPattern.test(id)) throw new RangeError(`witness "${id}" is not a homeserver id`);
  if (sorted.length > witnessesMax) throw new RangeError(`at most ${witnessesMax} witnesses`);
  return encoder.encode(sorted.join("\n"));
}

/** An MLS extension naming `ids` as the channel's witnesses (for ts-mls `createGroup`). */
export function witnessesExtension(ids: readonly string[]): { extensionType: number; extensionData: Uint8Array } {
  return { extensionType: witnessesExtensionType, extensionData: encodeWitnesses(ids) };
}

/**
 * The witnesses named by a GroupContext's `extensions`: none when the
 * extension is absent; a reason when it is there twice or malformed (ids
 * not sorted, repeated, not homeserver ids, or too many).
 */
export function witnessesOf(extensions: ReadonlyArray<{ readonly extensionType: unknown; readonly extensionData: Uint8Array }>): string[] | { reason: string } {
  const found = extensions.filter((e) => e.extensionType === witnessesExtensionType);
  if (found.length === 0) return [];
  if (found.length > 1) return { reason: "the witnesses extension appears more than once" };
  return decodeWitnesses(found[0]!.extensionData);
}

/** Decodes the extension's data (see {@link encodeWitnesses}), strictly. */
export function decodeWitnesses(data: Uint8Array): string[] | { reason: string } {
  let text: string;
  try {
    text = decoder.decode(data);
  } catch {
    return { reason: "the witnesses extension is not UTF-8" };
  }
  if (text === "") return { reason: "the witnesses extension names no homeserver" };
  const ids = text.split("\n");
  if (ids.length > witnessesMax) return { reason: `the witnesses extension names ${ids.length} homeservers, at most ${witnessesMax}` };
  for (let i = 0; i < ids.length; i++) {
    if (!homeserverIdPattern.test(ids[i]!)) return { reason: "the witnesses extension holds something that is not a homeserver id" };
    if (i > 0 && ids[i - 1]! >= ids[i]!) return { reason: "the witnesses extension is not sorted without repeats" };
  }
  return ids;
}
