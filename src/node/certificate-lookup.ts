/**
 * Where a homeserver finds complete commit certificates, and how callers wait
 * for one: assembled in memory by the CertificateCollector from the
 * signatures homeservers exchange, or recorded in the log later, whichever
 * comes first. ChannelService (SubmitCommit, conflicts, GetCommit) and the
 * inboxes (a commit is delivered only with its certificate) both ask here.
 */
import type { ChannelResult, ChannelStateMachine } from "../channel/channel-state-machine.ts";
import type { Certificate } from "../gen/epochd/channel/v1/channel_pb.ts";

/** Resolves waiters when a commit's certificate completes. */
export class CertificateWaiters {
  private readonly waiters = new Map<string, Array<() => void>>();

  /** Wakes whoever waits for the certificate of (channelId, epoch). */
  certified(channelId: string, epoch: bigint): void {
    const key = `${channelId}/${epoch}`;
    for (const wake of this.waiters.get(key) ?? []) wake();
    this.waiters.delete(key);
  }

  /** Resolves when (channelId, epoch) is certified; `isDone` covers a certificate completed already. */
  async wait(channelId: string, epoch: bigint, isDone: () => Promise<boolean>): Promise<void> {
    const key = `${channelId}/${epoch}`;
    const done = new Promise<void>((resolve) => {
      const list = this.waiters.get(key) ?? [];
      list.push(resolve);
      this.waiters.set(key, list);
    });
    if (await isDone()) return;
    await done;
  }
}

/** See the module comment. */
export class CertificateLookup {
  private readonly waiters = new CertificateWaiters();

  constructor(
    /** The certificate the collector completed in memory, if any. */
    readonly collected: (channelId: string, epoch: bigint) => Certificate | undefined,
    private readonly channels: ChannelStateMachine,
    /** Reads a key of a channel's records as of the last applied index here. */
    private readonly channelGet: (channelId: string, key: Uint8Array) => Promise<Uint8Array | undefined>,
  ) {}

  /** The complete certificate of the commit that ended `epoch`; undefined while it gathers signatures (or is unknown). */
  async complete(channelId: string, epoch: bigint): Promise<Certificate | undefined> {
    const collected = this.collected(channelId, epoch);
    if (collected !== undefined || this.channels.isGathering(channelId, epoch)) return collected;
    return this.channels.recordedCertificate((key) => this.channelGet(channelId, key), channelId, epoch);
  }

  /** Resolves once the certificate is complete (the caller bounds the wait). */
  waitComplete(channelId: string, epoch: bigint): Promise<void> {
    return this.waiters.wait(channelId, epoch, async () => (await this.complete(channelId, epoch)) !== undefined);
  }

  /** The collector completed a certificate. */
  onCollected(certificate: Certificate): void {
    this.waiters.certified(certificate.channelId, certificate.epoch);
  }

  /** Call with every applied channel result: the log recorded certificates. */
  onChannelResult(result: ChannelResult): void {
    if (!result.ok || result.kind !== "signatures") return;
    for (const { channelId, epoch } of result.certified) this.waiters.certified(channelId, epoch);
  }
}
