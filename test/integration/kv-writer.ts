import * as grpc from "@grpc/grpc-js";
import type { KvClient, ProcessCluster } from "./process-cluster.ts";

/**
 * A client that writes through whichever homeserver leads, following the
 * leader hints of "not leader" answers, and records every acknowledged write.
 */
export class KvWriter {
  readonly acked = new Map<string, string>();
  private readonly clients = new Map<string, KvClient>();
  private target: string;

  constructor(private readonly cluster: ProcessCluster, initialTarget: string) {
    this.target = initialTarget;
  }

  private client(id: string): KvClient {
    let client = this.clients.get(id);
    if (client === undefined) {
      client = this.cluster.kv(id);
      this.clients.set(id, client);
    }
    return client;
  }

  /** Tries one write; returns whether it was acknowledged. */
  async put(key: string, value: string): Promise<boolean> {
    try {
      await this.client(this.target).put({ key: new TextEncoder().encode(key), value: new TextEncoder().encode(value) }, { deadlineMs: 2000 });
      this.acked.set(key, value);
      return true;
    } catch (error) {
      const status = error as grpc.ServiceError;
      const hint = status.metadata?.get("epochd-leader-id")[0];
      const ids = [...this.cluster.nodes.keys()];
      if (status.code === grpc.status.FAILED_PRECONDITION && typeof hint === "string" && hint !== "") this.target = hint;
      else this.target = ids[(ids.indexOf(this.target) + 1) % ids.length]!;
      return false;
    }
  }

  /** Writes `key` until acknowledged, at most `timeoutMs`; returns when it was acknowledged (ms since epoch). */
  async putUntilAcked(key: string, value: string, timeoutMs = 20_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await this.put(key, value)) return Date.now();
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`write of ${key} not acknowledged within ${timeoutMs} ms`);
  }

  close(): void {
    for (const client of this.clients.values()) client.close();
  }
}
