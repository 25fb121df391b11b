/**
 * Retrying a proposal across a change of leaders. A channel group changes
 * leaders all the time under leader balancing; for a moment the old leader
 * refuses proposals (it is handing the group over) and followers know no
 * leader (the new one has not spoken yet). Neither put the command anywhere,
 * so it is safe to order it again once a leader is known.
 */
import { NotLeaderError, ProposalRefusedError } from "../multiraft/errors.ts";

/** Pause between attempts while no leader takes the command. */
const leaderChangeRetryMs = 5;
/** Most attempts, whatever the deadline. */
const leaderChangeAttemptsMax = 1000;

/**
 * Whether a proposal failed only because the group is changing leaders, with
 * the command put nowhere: refused by a leader handing the group over, or not
 * forwarded by a homeserver that knows no leader or lost leadership.
 */
export function changingLeader(error: unknown): boolean {
  return (error instanceof ProposalRefusedError && error.reason === "leadership-transfer") || error instanceof NotLeaderError;
}

/**
 * Runs `attempt` until it settles with anything but a leader change, or until
 * `deadlineMs` (wall clock) passes; between attempts it waits
 * {@link leaderChangeRetryMs}, then for `leaderKnown` (itself bounded by the
 * deadline). The last error is thrown when time runs out.
 */
export async function retryWhileLeaderChanges<T>(attempt: () => Promise<T>, leaderKnown: (deadlineMs: number) => Promise<void>, deadlineMs: number): Promise<T> {
  for (let attempts = 1; ; attempts++) {
    try {
      return await attempt();
    } catch (error) {
      if (!changingLeader(error) || Date.now() >= deadlineMs || attempts >= leaderChangeAttemptsMax) throw error;
      await new Promise((resolve) => setTimeout(resolve, leaderChangeRetryMs));
      await leaderKnown(deadlineMs);
    }
  }
}
