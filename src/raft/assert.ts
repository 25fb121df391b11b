/** Thrown when an invariant of the code itself is broken: a bug, never bad input. */
export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

/** Stops on a programmer error. Inputs from peers and clients are validated, never asserted. */
export function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}
