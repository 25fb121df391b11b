/**
 * Turns stored inbox entries into deliverable ones: a commit leaves only with
 * its complete certificate (src/node/certificate-lookup.ts: assembled from the
 * homeservers' signatures, or recorded in the log), and
 * delivery stops at a commit still waiting for signatures, so nothing after it
 * overtakes it.
 */
import { isCertified } from "../channel/certificate.ts";
import type { Certificate } from "../gen/epochd/channel/v1/channel_pb.ts";
import { EntryKind, type InboxEntry } from "../gen/epochd/inbox/v1/inbox_pb.ts";
import type { InboxStore } from "./inbox-store.ts";

/** Where delivery finds commit certificates. */
export interface CertificateSource {
  /** The complete certificate of the commit that ended `epoch` of `channelId`; undefined (or incomplete) while it gathers signatures. */
  certificate(channelId: string, epoch: bigint): Promise<Certificate | undefined>;
  /** Resolves once that certificate is complete. */
  waitCertified(channelId: string, epoch: bigint): Promise<void>;
}

/** A page of deliverable entries, and the commit it stopped at, if any. */
export interface DeliverablePage {
  readonly entries: InboxEntry[];
  readonly blockedOn?: { readonly channelId: string; readonly epoch: bigint };
}

/** Up to `limit` entries after `after` that may be delivered now, in order, commits with their certificates. */
export async function deliverablePage(store: InboxStore, certificates: CertificateSource, deviceId: string, after: bigint, limit: number): Promise<DeliverablePage> {
  const stored = await store.read(deviceId, after, limit);
  const entries: InboxEntry[] = [];
  for (const entry of stored) {
    if (entry.kind === EntryKind.COMMIT) {
      const certificate = await certificates.certificate(entry.channelId, entry.epoch);
      if (certificate === undefined || !isCertified(certificate)) return { entries, blockedOn: { channelId: entry.channelId, epoch: entry.epoch } };
      entry.certificate = certificate;
    }
    entries.push(entry);
  }
  return { entries };
}
