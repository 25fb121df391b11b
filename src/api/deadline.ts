import { DeadlineError } from "./errors.ts";

/** The longest any call may wait, whatever deadline its caller set. */
export const callWaitMsMax = 30_000;

/** Milliseconds left until a grpc-js deadline (a Date, a ms timestamp, or Infinity), capped. */
export function remainingMs(deadline: Date | number): number {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  if (!Number.isFinite(at)) return callWaitMsMax;
  return Math.max(0, Math.min(callWaitMsMax, at - Date.now()));
}

/** Resolves like `work`, or rejects with DEADLINE_EXCEEDED after `ms`. */
export function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new DeadlineError(what)), ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
