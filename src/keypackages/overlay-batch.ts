/**
 * The writes of one apply round in one key namespace, with puts AND deletes
 * visible to later reads of the same round (two claims in one round must not
 * both take the KeyPackage the first one deleted). Keys are given without the
 * namespace byte.
 */
import type { KvWrite } from "../storage/storage-engine.ts";

/** One namespace's pending writes over a storage reader. */
export class OverlayBatch {
  readonly writes: KvWrite[] = [];
  /** Latest pending value per key; null = deleted in this round. */
  private readonly overlay = new Map<string, Uint8Array | null>();

  constructor(
    private readonly namespace: number,
    private readonly read: (fullKey: Uint8Array) => Promise<Uint8Array | undefined>,
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
    const pending = this.overlay.get(Buffer.from(full).toString("latin1"));
    if (pending === null) return undefined;
    return pending ?? (await this.read(full));
  }
}
