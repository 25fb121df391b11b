/**
 * Where channel state lives in its Raft group's state key space:
 *
 *   'c' channelId                       -> ChannelRecord
 *   'E' len(channelId) channelId epoch  -> EpochRecord (the commit that ended `epoch`, u64 big-endian)
 *   'v' len(channelId) channelId seq    -> ChannelEvent (u64 big-endian sequence)
 *   'u' len(channelId) channelId epoch  -> Certificate still gathering signatures (deleted once certified)
 *   'K' len(channelId) channelId epoch  -> the complete Certificate of the commit that ended `epoch`
 *
 * Big-endian numbers make RocksDB iterate epochs and events in order.
 */

const encoder = new TextEncoder();

function withChannel(kind: number, channelId: string, suffix?: bigint): Uint8Array {
  const id = encoder.encode(channelId);
  const out = new Uint8Array(2 + id.byteLength + (suffix === undefined ? 0 : 8));
  out[0] = kind;
  out[1] = id.byteLength;
  out.set(id, 2);
  if (suffix !== undefined) new DataView(out.buffer).setBigUint64(2 + id.byteLength, suffix);
  return out;
}

export const channelRecordPrefix = 0x63; // 'c'

/** Key of a channel's current record. */
export function channelKey(channelId: string): Uint8Array {
  const id = encoder.encode(channelId);
  const out = new Uint8Array(1 + id.byteLength);
  out[0] = channelRecordPrefix;
  out.set(id, 1);
  return out;
}

/** Key of the record of the commit that ended `epoch`. */
export function epochKey(channelId: string, epoch: bigint): Uint8Array {
  return withChannel(0x45, channelId, epoch);
}

/** Key of a channel's event `sequence`. */
export function eventKey(channelId: string, sequence: bigint): Uint8Array {
  return withChannel(0x76, channelId, sequence);
}

/** The prefix of all of a channel's events. */
export function eventPrefix(channelId: string): Uint8Array {
  return withChannel(0x76, channelId);
}

/** First byte of the keys of certificates still gathering signatures. */
export const uncertifiedPrefix = 0x75; // 'u'

/** Key of the certificate of epoch `epoch`'s commit while it gathers signatures. */
export function uncertifiedKey(channelId: string, epoch: bigint): Uint8Array {
  return withChannel(uncertifiedPrefix, channelId, epoch);
}

/** Key of the complete certificate of the commit that ended `epoch`. */
/**
 * Key of an accepted application message, by the SHA-256 of its bytes ('m' len(channelId) channelId
 * hash): the value is its event sequence, so a message ordered twice (a client retrying after a lost
 * answer) is recognized and answered with its first place.
 */
export function messageKey(channelId: string, messageHash: Uint8Array): Uint8Array {
  const prefix = withChannel(0x6d, channelId);
  const out = new Uint8Array(prefix.byteLength + messageHash.byteLength);
  out.set(prefix, 0);
  out.set(messageHash, prefix.byteLength);
  return out;
}

export function certificateKey(channelId: string, epoch: bigint): Uint8Array {
  return withChannel(0x4b, channelId, epoch);
}

/** Channel ids: 1 to 128 characters of [A-Za-z0-9._-]. */
export function isValidChannelId(id: string): boolean {
  return /^[A-Za-z0-9._-]{1,128}$/.test(id);
}
