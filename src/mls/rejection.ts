/**
 * The value every check returns for bad input. Checks never throw on client bytes: the channel state
 * machine replicates the rejection itself, and the API maps it to INVALID_ARGUMENT with `reason`.
 */
export interface Rejection {
  readonly ok: false;
  /** Human-readable, deterministic (the same input gives the same text on every homeserver). */
  readonly reason: string;
}

/** Builds a {@link Rejection}. */
export function reject(reason: string): Rejection {
  return { ok: false, reason };
}

/** True when `value` is a {@link Rejection}; narrows unions of `{ ok: true, ... } | Rejection`. */
export function isRejection<T extends { ok: boolean }>(value: T | Rejection): value is Rejection {
  return !value.ok;
}

/**
 * Runs `check` and turns anything it throws into a Rejection. ts-mls decoders and helpers throw on some
 * malformed input (CodecError, ValidationError, RangeError from a DataView); those are input errors, not
 * bugs, so they become rejections. The message of the error is not used: it may differ across library
 * versions, and the reason must stay the same on every homeserver.
 */
export async function guarded<T>(what: string, check: () => Promise<T | Rejection>): Promise<T | Rejection> {
  try {
    return await check();
  } catch {
    return reject(`${what}: malformed input`);
  }
}

/** Synchronous {@link guarded}. */
export function guardedSync<T>(what: string, check: () => T | Rejection): T | Rejection {
  try {
    return check();
  } catch {
    return reject(`${what}: malformed input`);
  }
}
