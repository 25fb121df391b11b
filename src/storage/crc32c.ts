/**
 * CRC-32C (Castagnoli), the checksum every stored record carries. Chosen over
 * CRC-32 (IEEE) because it detects more error patterns in short records and is
 * what RocksDB, iSCSI and ext4 use, so its test vectors are well known.
 *
 * Table-driven, eight bytes per step ("slicing-by-8": eight 256-entry tables,
 * each advancing the CRC by one more byte), reflected polynomial 0x82F63B78.
 * About four times the speed of one byte per step here: 66 MB in about 70 ms
 * instead of 240 to 320 ms (a large snapshot record is also checksummed in
 * slices, see records.ts), and a 1 KiB log entry in about a microsecond.
 */

const reflectedPolynomial = 0x82f63b78;

/** `tables[k][b]`: the CRC of byte `b` followed by `k` zero bytes; `tables[0]` is the classic table. */
const tables: readonly Uint32Array[] = buildTables();
const [t0, t1, t2, t3, t4, t5, t6, t7] = tables as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];

function buildTables(): Uint32Array[] {
  const first = new Uint32Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 1 ? (crc >>> 1) ^ reflectedPolynomial : crc >>> 1;
    }
    first[byte] = crc >>> 0;
  }
  const result = [first];
  for (let k = 1; k < 8; k++) {
    const previous = result[k - 1]!;
    const next = new Uint32Array(256);
    for (let byte = 0; byte < 256; byte++) next[byte] = (previous[byte]! >>> 8) ^ first[previous[byte]! & 0xff]!;
    result.push(next);
  }
  return result;
}

/**
 * Continues a CRC-32C over `bytes`. Start with `crc32cInit`, feed any number of
 * chunks, and finish with {@link crc32cFinish}; chunking does not change the result,
 * which lets a record's checksum cover its key and its payload without copying them.
 */
export function crc32cUpdate(state: number, bytes: Uint8Array): number {
  let crc = state;
  let i = 0;
  const end8 = bytes.length - (bytes.length & 7);
  for (; i < end8; i += 8) {
    const low = crc ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24));
    crc =
      t7[low & 0xff]! ^ t6[(low >>> 8) & 0xff]! ^ t5[(low >>> 16) & 0xff]! ^ t4[low >>> 24]! ^
      t3[bytes[i + 4]!]! ^ t2[bytes[i + 5]!]! ^ t1[bytes[i + 6]!]! ^ t0[bytes[i + 7]!]!;
  }
  for (; i < bytes.length; i++) crc = t0[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return crc >>> 0;
}

/** The running state before any byte. */
export const crc32cInit = 0xffffffff;

/** The final checksum of a running state, as an unsigned 32-bit number. */
export function crc32cFinish(state: number): number {
  return (state ^ 0xffffffff) >>> 0;
}

/** CRC-32C of the concatenation of `chunks`, as an unsigned 32-bit number. */
export function crc32c(...chunks: Uint8Array[]): number {
  let state = crc32cInit;
  for (const chunk of chunks) state = crc32cUpdate(state, chunk);
  return crc32cFinish(state);
}
