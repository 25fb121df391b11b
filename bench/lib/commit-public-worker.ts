/**
 * Child process of commit-public.ts: generates real ts-mls PublicMessage
 * commits for a range of mode (b) channels and sends each channel's chain to
 * the parent over IPC as it completes. Started with `fork`; exits when the
 * parent disconnects.
 */
import { createCommit } from "ts-mls/createCommit.js";
import { encodeMlsMessage } from "ts-mls/message.js";
import { clientSuiteImpl, createTestGroup, groupInfoMessage, makeCommit, makeDevice } from "../../test/fixtures/mls-group.ts";
import type { PublicChannel, PublicWorkerReply, PublicWorkerRequest } from "./commit-public.ts";
import type { CommitMaterial } from "./commit-targets.ts";

/** Largest authenticated_data padding tried, a bound on a size mistake. */
const paddingBytesMax = 65_536;

/**
 * One channel: alice@hs1 creates the group, adds bob@hs2 and carol@hs3 (commit 0, with its Welcome), then
 * makes `keyUpdates` empty commits (key updates, each with an UpdatePath), padded with authenticated data to
 * about `commitBytes` bytes.
 */
async function generateChannel(channelId: string, keyUpdates: number, commitBytes: number): Promise<PublicChannel> {
  const impl = await clientSuiteImpl();
  const [alice, bob, carol] = await Promise.all([makeDevice("alice@hs1"), makeDevice("bob@hs2"), makeDevice("carol@hs3")]);
  const created = await createTestGroup(alice.keyPackage);
  const add = await makeCommit(created.state, { add: [bob.keyPackage.publicPackage, carol.keyPackage.publicPackage] });
  const commits: CommitMaterial[] = [{ commit: add.commit, nextGroupInfo: add.nextGroupInfo, ...(add.welcome === undefined ? {} : { welcome: add.welcome }) }];
  let state = add.newState;
  let paddingBytes = Math.max(0, commitBytes - 657);
  for (let i = 0; i < keyUpdates; i++) {
    const result = await createCommit(
      { state, cipherSuite: impl },
      { extraProposals: [], wireAsPublicMessage: true, ratchetTreeExtension: true, authenticatedData: new Uint8Array(paddingBytes) },
    );
    const commit = encodeMlsMessage(result.commit);
    commits.push({ commit, nextGroupInfo: await groupInfoMessage(result.newState) });
    paddingBytes = Math.min(paddingBytesMax, Math.max(0, paddingBytes + commitBytes - commit.length));
    state = result.newState;
  }
  return { channelId, groupId: created.state.groupContext.groupId, initialGroupInfo: created.groupInfo, commits };
}

process.on("message", (message: PublicWorkerRequest) => {
  void (async () => {
    try {
      for (const channelId of message.channelIds) {
        const reply: PublicWorkerReply = { kind: "channel", channel: await generateChannel(channelId, message.keyUpdates, message.commitBytes) };
        process.send!(reply);
      }
      process.send!({ kind: "done" } satisfies PublicWorkerReply);
    } catch (error) {
      process.send!({ kind: "failed", reason: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies PublicWorkerReply);
    }
  })();
});
process.on("disconnect", () => process.exit(0));
