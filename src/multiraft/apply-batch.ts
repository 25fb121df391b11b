import type { KvWrite } from "../storage/storage-engine.ts";

/**
 * The writes of one apply round in one key namespace, readable before they
 * reach storage: an entry applied later in the same round sees what an
 * earlier one wrote or deleted (two claims in one round must not both take
 * the KeyPackage the first one deleted). Keys are given without the
 * namespace byte.
 */
export class ApplyBatch {
  readonly writes: KvWrite[] = [];
  /** Values written this round; null for a key deleted this round. */
  private readonly overlay = new Map<string, Uint8Array | null>();

  constructor(
    private readonly namespace: number,
    private readonly read: (key: Uint8Array) => Promise<Uint8Array | undefined>,
  ) {}

  private full(key: Uint8Array): Uint8Array {
    const out = new Uint8Array(1 + key.byteLength);
    out[0] = this.namespace;
    out.set(key, 1);
    return out;
  }

  put(key: Uint8Array, value: Uint8Array): void {
    const full = this.full(key);
    this.writes.push({ key: full, value });
    this.overlay.set(Buffer.from(full).toString("latin1"), value);
  }

  delete(key: Uint8Array): void {
    const full = this.full(key);
    this.writes.push({ key: full, delete: true });
    this.overlay.set(Buffer.from(full).toString("latin1"), null);
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    const full = this.full(key);
    const written = this.overlay.get(Buffer.from(full).toString("latin1"));
    if (written === null) return undefined;
    return written ?? (await this.read(full));
  }
}
