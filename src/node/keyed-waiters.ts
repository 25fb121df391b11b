/**
 * Callers waiting for something to happen to a key (a channel id claimed, a channel's group settled),
 * all woken at once; a wait gives up after its timeout and leaves nothing behind.
 */
export class KeyedWaiters {
  private readonly waiters = new Map<string, Array<() => void>>();

  /** Wakes every caller waiting on `key`. */
  wake(key: string): void {
    for (const wake of this.waiters.get(key) ?? []) wake();
    this.waiters.delete(key);
  }

  /** Resolves when `key` is woken or `timeoutMs` passed, whichever comes first (the caller checks which). */
  async wait(key: string, timeoutMs: number): Promise<void> {
    let wake: () => void = () => {};
    const woken = new Promise<void>((resolve) => (wake = resolve));
    this.waiters.set(key, [...(this.waiters.get(key) ?? []), wake]);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await Promise.race([woken, timedOut]);
    clearTimeout(timer);
    const left = (this.waiters.get(key) ?? []).filter((w) => w !== wake);
    if (left.length > 0) this.waiters.set(key, left);
    else this.waiters.delete(key);
  }
}
