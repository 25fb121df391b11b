/**
 * The cluster state machine on a real RocksDB, fed entries through its real
 * apply path (apply, then the engine's apply batch, then afterWrite), as the
 * Raft driver does, without Raft. Homeservers register real Ed25519 keys.
 */
import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { encodeIdentityCommand } from "../../src/identity/identity-command.ts";
import type { IdentityResult } from "../../src/identity/identity-state.ts";
import { sponsorRecord } from "../../src/identity/sponsor.ts";
import type { IdentityCommandSchema } from "../../src/gen/epochd/identity/v1/identity_command_pb.ts";
import type { DeviceIdentityRecord } from "../../src/gen/epochd/identity/v1/identity_pb.ts";
import { ClusterStateMachine } from "../../src/node/cluster-state-machine.ts";
import { encodeSetHomeserver } from "../../src/node/directory-command.ts";
import { EntryType, type Entry } from "../../src/raft/types.ts";
import { StorageEngine, type GroupStore } from "../../src/storage/storage-engine.ts";
import { makeTempDir, removeDir } from "../storage/helpers.ts";

/** A homeserver's directory key pair. */
export interface TestHomeserver {
  readonly id: string;
  readonly privateKey: KeyObject;
  readonly publicKeyRaw: Uint8Array;
}

export function testHomeserver(id: string): TestHomeserver {
  const { privateKey } = generateKeyPairSync("ed25519");
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return { id, privateKey, publicKeyRaw: new Uint8Array(spki.subarray(spki.length - 32)) };
}

/** `record` sponsored by `homeserver`. */
export function sponsored(record: DeviceIdentityRecord, homeserver: TestHomeserver): DeviceIdentityRecord {
  return sponsorRecord(record, (message) => new Uint8Array(sign(null, message, homeserver.privateKey)));
}

export const clusterId = "cluster-test";

/** A ClusterStateMachine over a fresh RocksDB in a temp directory. */
export class MachineHarness {
  private index = 1;
  private constructor(
    readonly dir: string,
    private engine: StorageEngine,
    private store: GroupStore,
    public machine: ClusterStateMachine,
  ) {}

  static async open(homeservers: readonly TestHomeserver[]): Promise<MachineHarness> {
    const dir = makeTempDir("identity");
    const engine = await StorageEngine.open(dir);
    const store = await engine.openGroup("cluster", ["hs1"]);
    const machine = new ClusterStateMachine(store, clusterId);
    await machine.load();
    const harness = new MachineHarness(dir, engine, store, machine);
    await harness.applyAll(
      homeservers.map((h, i) =>
        encodeSetHomeserver({ id: h.id, peerAddress: `127.0.0.1:${7000 + i}`, clientAddress: `127.0.0.1:${8000 + i}`, signingKey: Buffer.from(h.publicKeyRaw).toString("base64") }),
      ),
    );
    return harness;
  }

  /** Applies `payloads` as consecutive entries in ONE apply round; returns each entry's result. */
  async applyAll(payloads: readonly Uint8Array[]): Promise<unknown[]> {
    const entries: Entry[] = payloads.map((data) => ({ term: 1, index: ++this.index, type: EntryType.Normal, data }));
    if (entries.length === 0) return [];
    const outcome = await this.machine.apply(entries);
    await this.engine.apply([{ group: this.store, appliedIndex: this.index, writes: outcome.writes }]);
    outcome.afterWrite?.();
    return entries.map((e) => outcome.results.get(e.index));
  }

  async identity(command: MessageInitShape<typeof IdentityCommandSchema>): Promise<IdentityResult> {
    return (await this.applyAll([encodeIdentityCommand(command)]))[0] as IdentityResult;
  }

  /** Publishes records (already sponsored) in one entry. */
  publish(records: DeviceIdentityRecord[]): Promise<IdentityResult> {
    return this.identity({ command: { case: "publish", value: { records } } });
  }

  /** Closes and reopens storage and a new state machine loaded from it (a restart). */
  async restart(): Promise<void> {
    await this.engine.close();
    this.engine = await StorageEngine.open(this.dir);
    this.store = await this.engine.openGroup("cluster", ["hs1"]);
    this.machine = new ClusterStateMachine(this.store, clusterId);
    await this.machine.load();
  }

  async close(): Promise<void> {
    await this.engine.close();
    removeDir(this.dir);
  }
}
