/** Bounds of one device's inbox; a full inbox refuses direct messages and turns channel events into gap markers. */
export interface InboxLimits {
  /** Most entries held for one device (gap markers may exceed it by one per channel). */
  readonly entriesMax: number;
  /** Most bytes of stored entries held for one device. */
  readonly bytesMax: number;
  /** Largest direct message payload. */
  readonly directBytesMax: number;
}

/** The defaults: room for days of a busy device's traffic, small enough to keep in one homeserver's disk budget. */
export const defaultInboxLimits: InboxLimits = {
  entriesMax: 20_000,
  bytesMax: 64 * 1024 * 1024,
  directBytesMax: 64 * 1024,
};

/** Entries per Subscribe batch and per Fetch page, at most. */
export const inboxPageMax = 256;
/** Flow-control window of a subscription when the client names none, and the largest allowed. */
export const inboxWindowDefault = 512;
export const inboxWindowMax = 4096;
