/**
 * CRC-32C (Castagnoli), the checksum every stored record carries. Chosen over
 * CRC-32 (IEEE) because it detects more error patterns in short records and is
 * what RocksDB, iSCSI and ext4 use, so its test vectors are well known.
 *
 * A table-driven implementation, one byte per step, reflected polynomial
 * 0x82F63B78. Small and fast enough for 1 KiB log entries (a few microseconds).
 */

const reflectedPolynomial = 0x82f63b78;

const table: Uint32Array = buildTable();

function buildTable(): Uint32Array {
  const result = new Uint32Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 1 ? (crc >>> 1) ^ reflectedPolynomial : crc >>> 1;
    }
    result[byte] = crc >>> 0;
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
  for (let i = 0; i < bytes.length; i++) {
    crc = table[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  }
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
