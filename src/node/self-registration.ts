import { encodeSetHomeserver, type HomeserverRecord } from "./directory-command.ts";

/** How often a homeserver checks that the directory holds its current record. */
export const registrationCheckIntervalMs = 500;

/**
 * Keeps this homeserver's record in the cluster directory current (addresses
 * and certificate-signing key): whenever the replicated record differs from
 * what it should be, proposes it (forwarded to the leader) again.
 */
export class SelfRegistration {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly wanted: HomeserverRecord,
    private readonly current: () => HomeserverRecord | undefined,
    private readonly propose: (data: Uint8Array) => boolean,
  ) {}

  start(): void {
    const check = () => {
      const record = this.current();
      const upToDate =
        record !== undefined &&
        record.peerAddress === this.wanted.peerAddress &&
        record.clientAddress === this.wanted.clientAddress &&
        record.signingKey === this.wanted.signingKey;
      if (!upToDate) this.propose(encodeSetHomeserver(this.wanted));
    };
    this.timer = setInterval(check, registrationCheckIntervalMs);
    setImmediate(check);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }
}
