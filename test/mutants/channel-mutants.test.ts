/**
 * The proof that the channel state machine's tests bite: each deliberately
 * broken variant below is applied to a temporary copy of the project, and the
 * unit tests of test/channel must fail against it. The search string must
 * occur exactly once, so a refactor fails this test loudly instead of
 * silently testing nothing. Production code carries none of this.
 */
import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const tempDirs: string[] = [];

interface ChannelMutant {
  readonly name: string;
  readonly file: string;
  readonly search: string;
  readonly replace: string;
}

const channelMachine = "src/channel/channel-state-machine.ts";

/** Broken variants of the channel state machine and its certificates. */
export const channelMutants: readonly ChannelMutant[] = [
  {
    name: "preview-decision-reused-on-another-state",
    file: channelMachine,
    search: "  return decisionInputKeys.every((key) => memo[key] === record[key]) && sameList(memo.voters, voters);",
    replace: "  return true;",
  },
  {
    name: "commit-on-any-epoch",
    file: channelMachine,
    search: "    if (request.epoch !== record.epoch) return this.conflict(record, request.epoch);\n    // Before any await",
    replace: "    // Before any await",
  },
  {
    name: "no-role-check-on-commit",
    file: channelMachine,
    search: "const denied = this.checkRole(record, verified.sender.deviceId, verified.adds, verified.removes.map((m) => m.deviceId));",
    replace: "const denied = undefined as string | undefined;",
  },
  {
    name: "proposed-removals-trusted-blindly",
    file: channelMachine,
    search: "    if (removed.some((id) => id !== sender && !record.pendingProposedRemoves.includes(id))) return",
    replace: "    if (removed.some((id) => id !== sender && record.pendingProposedRemoves.length === 0)) return",
  },
  {
    name: "non-voter-signature-counted",
    file: channelMachine,
    search: "        if (!certificate.voters.includes(signer) || certificate.signatures.some((s) => s.homeserverId === signer)) continue;\n",
    replace: "        if (certificate.signatures.some((s) => s.homeserverId === signer)) continue;\n",
  },
  {
    name: "signer-counted-twice",
    file: channelMachine,
    search: "        if (!certificate.voters.includes(signer) || certificate.signatures.some((s) => s.homeserverId === signer)) continue;\n",
    replace: "        if (!certificate.voters.includes(signer)) continue;\n",
  },
  {
    name: "signature-not-verified",
    file: channelMachine,
    search: "        if (key === undefined || !verifyCommitSignature(key, statement, signature)) continue;\n",
    replace: "        if (key === undefined) continue;\n",
  },
  {
    name: "merkle-proof-ignored",
    file: "src/channel/certificate.ts",
    search: "  return merkleRootFromProof(merkleLeafHash(statement), signature.leafIndex, signature.leafCount, signature.proof);",
    replace: "  return signature.proof[signature.proof.length - 1] ?? merkleLeafHash(statement);",
  },
  {
    name: "collector-counts-another-statement",
    file: "src/node/certificate-collector.ts",
    search: "      else if (bytesEqual(entry.applied.statement, statements[i]!)) this.count(entry, signer, signature, signerKey);",
    replace: "      else this.count(entry, signer, signature, signerKey);",
  },
  {
    name: "collector-counts-non-voter",
    file: "src/node/certificate-collector.ts",
    search: "    if (entry.complete !== undefined || !applied.voters.includes(signer) || entry.signatures.has(signer)) return;",
    replace: "    if (entry.complete !== undefined || entry.signatures.has(signer)) return;",
  },
  {
    name: "encrypted-next-groupinfo-of-any-group",
    file: channelMachine,
    search: "    if (Buffer.compare(next.groupId, record.groupId) !== 0) return invalid(\"next GroupInfo is for another group\");\n",
    replace: "",
  },
  {
    name: "quorum-of-one",
    file: "src/channel/certificate.ts",
    search: "  return Math.floor(voters / 2) + 1;",
    replace: "  return 1;",
  },
  {
    name: "commands-while-group-unsettled",
    file: channelMachine,
    search: "    if (followsMembers(groupVoters, wanted)) return undefined;",
    replace: "    return undefined;",
  },
  {
    name: "learner-promoted-before-caught-up",
    file: "src/channel/group-membership.ts",
    search: "    if (match >= commitIndex) return { kind: \"promote\", homeserver: learner };",
    replace: "    return { kind: \"promote\", homeserver: learner };",
  },
  {
    name: "message-epoch-window-ignored",
    file: channelMachine,
    search: "    if (inspected.epoch > record.epoch || inspected.epoch + messageEpochWindow < record.epoch) {",
    replace: "    if (false) {",
  },
];

function mutatedCopy(mutant: ChannelMutant): string {
  const dir = mkdtempSync(join(tmpdir(), "epochd-channel-mutant-"));
  tempDirs.push(dir);
  for (const path of ["src", "test/channel", "test/fixtures"]) cpSync(join(root, path), join(dir, path), { recursive: true });
  cpSync(join(root, "package.json"), join(dir, "package.json"));
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
  const text = readFileSync(join(root, mutant.file), "utf8");
  const occurrences = text.split(mutant.search).length - 1;
  if (occurrences !== 1) throw new Error(`mutant ${mutant.name}: search string occurs ${occurrences} times in ${mutant.file}, expected exactly once`);
  writeFileSync(join(dir, mutant.file), text.replace(mutant.search, mutant.replace));
  return dir;
}

/** Runs the copy's channel unit tests; resolves with vitest's exit code. */
function runChannelTests(dir: string): Promise<number> {
  return new Promise((done) => {
    const vitest = join(root, "node_modules/vitest/vitest.mjs");
    const child = spawn(process.execPath, [vitest, "run", "test/channel", "--reporter=dot"], { cwd: dir, stdio: "ignore" });
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      done(code ?? -1);
    });
  });
}

describe("channel state machine mutants", () => {
  afterAll(() => {
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  it("every broken variant fails the channel unit tests", async () => {
    const results: Array<[string, number]> = [];
    for (let i = 0; i < channelMutants.length; i += 2) {
      const pair = channelMutants.slice(i, i + 2);
      const codes = await Promise.all(pair.map((m) => runChannelTests(mutatedCopy(m))));
      pair.forEach((m, j) => results.push([m.name, codes[j]!]));
    }
    console.log(results.map(([name, code]) => `${name}: ${code === 0 ? "NOT caught" : "caught"}`).join("\n"));
    expect(results.filter(([, code]) => code === 0).map(([name]) => name)).toEqual([]);
  }, 600_000);
});
