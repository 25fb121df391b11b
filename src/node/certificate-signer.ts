import { create, toBinary } from "@bufbuild/protobuf";
import { statementBytes } from "../channel/certificate.ts";
import type { ChannelResult } from "../channel/channel-state-machine.ts";
import { ChannelCommandSchema } from "../gen/epochd/state/v1/channel_state_pb.ts";
import type { LogIndex } from "../raft/types.ts";
import { encodeChannelCommand } from "./cluster-state-machine.ts";
import type { SigningKey } from "./signing-key.ts";

/** Most signatures waiting to be confirmed before the oldest are dropped. */
export const pendingSignaturesMax = 100_000;
/** How often unconfirmed signatures are proposed again. */
export const resendIntervalMs = 1000;

interface PendingSignature {
  readonly channelId: string;
  readonly epoch: bigint;
  readonly signature: Uint8Array;
  sentAt: number;
}

/**
 * Co-signs the commits this homeserver applies for channels it certifies, and
 * proposes its signatures (batched per round, forwarded to the leader) until
 * each certificate is complete.
 */
export class CertificateSigner {
  private readonly pending = new Map<string, PendingSignature>();
  private flushScheduled = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly selfId: string,
    private readonly clusterId: string,
    private readonly key: SigningKey,
    /** Proposes (or forwards) a log entry; false when no leader is known. */
    private readonly propose: (data: Uint8Array) => boolean,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.flush(true), resendIntervalMs);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }

  /** Reacts to an applied channel command. */
  onChannelResult(result: ChannelResult, index: LogIndex): void {
    if (!result.ok) return;
    if (result.kind === "commit-accepted" && result.voters.includes(this.selfId)) {
      const statement = statementBytes(this.clusterId, result.channelId, result.epoch, result.commitHash, BigInt(index));
      if (this.pending.size >= pendingSignaturesMax) this.pending.delete(this.pending.keys().next().value!);
      this.pending.set(`${result.channelId}/${result.epoch}`, { channelId: result.channelId, epoch: result.epoch, signature: this.key.sign(statement), sentAt: 0 });
      this.scheduleFlush();
    } else if (result.kind === "signatures") {
      for (const done of result.certified) this.pending.delete(`${done.channelId}/${done.epoch}`);
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush(false);
    });
  }

  /** Proposes the signatures not sent yet (or, on `resend`, those unconfirmed for a while). */
  private flush(resend: boolean): void {
    const now = Date.now();
    const items = [...this.pending.values()].filter((p) => p.sentAt === 0 || (resend && now - p.sentAt >= resendIntervalMs));
    if (items.length === 0) return;
    const command = create(ChannelCommandSchema, {
      command: { case: "signatures", value: { homeserverId: this.selfId, items: items.map(({ channelId, epoch, signature }) => ({ channelId, epoch, signature })) } },
    });
    if (!this.propose(encodeChannelCommand(toBinary(ChannelCommandSchema, command)))) return;
    for (const item of items) item.sentAt = now;
  }
}
