/**
 * Runs async tasks one at a time, in the order they were queued. The engine
 * queues all writes of one kind (log writes, state machine writes) so that two
 * batches never race in RocksDB's thread pool and the in-memory mirror is
 * updated in the same order as the disk.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  /** Queues `task`; resolves or rejects with its outcome. A failed task does not stop later ones. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Resolves once every task queued so far has finished. */
  async drain(): Promise<void> {
    await this.tail;
  }
}
