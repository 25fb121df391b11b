/**
 * Channel ids are unique in a cluster: before a homeserver creates a
 * channel's group it claims the id in the cluster group (op 9). The claim
 * records only the id and the creating homeserver: the channel's state and
 * members live in its own group, which other homeservers never see.
 */
import { entryBody, entryPayload } from "../multiraft/entry-payload.ts";
import { NotLeaderError, OutcomeUnknownError } from "../multiraft/errors.ts";
import { KeyedWaiters } from "./keyed-waiters.ts";

/** The op byte of a channel claim in the cluster log. */
export const channelClaimOp = 9;

/** One claimed channel id. */
export interface ChannelClaim {
  readonly channelId: string;
  readonly homeserverId: string;
}

/** The log entry payload claiming `channelId` for `homeserverId`. */
export function encodeChannelClaim(claim: ChannelClaim): Uint8Array {
  return entryPayload(channelClaimOp, new TextEncoder().encode(`${claim.homeserverId}\n${claim.channelId}`));
}

/** The claim in a payload of op 9, or undefined if malformed. */
export function decodeChannelClaim(payload: Uint8Array): ChannelClaim | undefined {
  const body = entryBody(payload, channelClaimOp);
  if (body === undefined) return undefined;
  const text = new TextDecoder().decode(body);
  const cut = text.indexOf("\n");
  if (cut <= 0 || cut === text.length - 1) return undefined;
  return { homeserverId: text.slice(0, cut), channelId: text.slice(cut + 1) };
}

/** The channel id is taken by another homeserver's channel. */
export class ChannelTakenError extends Error {
  constructor(readonly channelId: string) {
    super(`channel ${channelId} exists`);
    this.name = "ChannelTakenError";
  }
}

/** Claims channel ids for one homeserver and waits for the claims to be applied here. */
export class ChannelClaims {
  private readonly waiters = new KeyedWaiters();

  constructor(
    private readonly selfId: string,
    /** The homeserver that holds a claim, as applied here. */
    private readonly ownerOf: (channelId: string) => string | undefined,
    /** Proposes to the cluster group (forwarded to its leader); false without a leader. */
    private readonly proposeAnywhere: (data: Uint8Array) => boolean,
  ) {}

  /** Call when a claim was applied here. */
  applied(channelId: string): void {
    this.waiters.wake(channelId);
  }

  /**
   * Resolves once `channelId` is claimed for this homeserver (at once if it
   * is already); rejects with ChannelTakenError if another homeserver holds
   * it, or when `waitMs` passes first.
   */
  async claim(channelId: string, waitMs: number): Promise<void> {
    const owner = this.ownerOf(channelId);
    if (owner === this.selfId) return;
    if (owner !== undefined) throw new ChannelTakenError(channelId);
    const applied = this.waiters.wait(channelId, waitMs);
    if (!this.proposeAnywhere(encodeChannelClaim({ channelId, homeserverId: this.selfId }))) {
      throw new NotLeaderError("cluster", "");
    }
    await applied;
    const now = this.ownerOf(channelId);
    if (now === undefined) throw new OutcomeUnknownError("cluster", `claiming channel ${channelId} did not finish in time`);
    if (now !== this.selfId) throw new ChannelTakenError(channelId);
  }
}
