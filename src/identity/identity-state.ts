/**
 * The replicated identity index: applies identity commands (publish records,
 * block a homeserver) deterministically, writes them under its key namespace,
 * and keeps the in-memory {@link IdentityIndex} current. Keys (after the
 * namespace byte): 'r' + device id -> DeviceIdentityRecord; 'b' + homeserver id
 * -> the homeserver id (UTF-8) while blocked.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { IdentityCommandSchema, type IdentityCommand } from "../gen/epochd/identity/v1/identity_command_pb.ts";
import { DeviceIdentityRecordSchema } from "../gen/epochd/identity/v1/identity_pb.ts";
import { isValidDeviceHomeserver } from "../mls/identity.ts";
import { checkRecord, isRejection } from "./device-record.ts";
import { IdentityIndex } from "./identity-index.ts";
import { refuse, type IdentityRejection } from "./identity-rejection.ts";
import { checkPublish } from "./publish-rules.ts";

/** What applying an identity command decided; replicated, identical on every homeserver. */
export type IdentityResult =
  | { readonly ok: true; readonly kind: "published"; readonly deviceIds: readonly string[] }
  | { readonly ok: true; readonly kind: "blocked"; readonly homeserverId: string; readonly blocked: boolean }
  | IdentityRejection;

/** Where apply writes (keys without the namespace byte). */
export interface IdentityWriter {
  put(key: Uint8Array, value: Uint8Array): void;
  delete(key: Uint8Array): void;
}

const recordTag = 0x72; // 'r'
const blockedTag = 0x62; // 'b'

function tagged(tag: number, text: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  const out = new Uint8Array(1 + bytes.byteLength);
  out[0] = tag;
  out.set(bytes, 1);
  return out;
}

/** The directory facts identity apply reads. */
export interface IdentityDirectory {
  readonly clusterId: string;
  signingKeyOf(homeserverId: string): Uint8Array | undefined;
}

/** The identity part of the cluster state machine. */
export class IdentityState {
  readonly index = new IdentityIndex();

  constructor(private readonly directory: IdentityDirectory) {}

  /** Rebuilds the index from storage; `scan(prefix)` lists keys of this namespace under `prefix`. */
  async load(scan: (prefix: Uint8Array) => AsyncIterable<[Uint8Array, Uint8Array]>): Promise<void> {
    this.index.clear();
    for await (const [, value] of scan(Uint8Array.of(recordTag))) {
      const record = fromBinary(DeviceIdentityRecordSchema, value);
      const device = checkRecord(record, this.directory.clusterId, undefined);
      if (isRejection(device)) throw new Error(`stored identity record does not check: ${device.reason}`);
      this.index.put(device);
    }
    for await (const [, value] of scan(Uint8Array.of(blockedTag))) this.index.setBlocked(new TextDecoder().decode(value), true);
  }

  /** Applies one command (the entry body after version and op bytes). Never throws on any content. */
  apply(body: Uint8Array, writer: IdentityWriter): IdentityResult {
    let command: IdentityCommand;
    try {
      command = fromBinary(IdentityCommandSchema, body);
    } catch {
      return refuse("invalid", "malformed identity command");
    }
    switch (command.command.case) {
      case "publish":
        return this.publish(command.command.value.records, writer);
      case "setBlocked":
        return this.setBlocked(command.command.value.homeserverId, command.command.value.blocked, writer);
      default:
        return refuse("invalid", "empty identity command");
    }
  }

  private publish(records: Parameters<typeof checkPublish>[0], writer: IdentityWriter): IdentityResult {
    const checked = checkPublish(records, { ...this.directory, signingKeyOf: (id) => this.directory.signingKeyOf(id), requireSponsor: true }, this.index);
    if (isRejection(checked)) return checked;
    for (const device of checked) {
      this.index.put(device);
      writer.put(tagged(recordTag, device.body.deviceId), toBinary(DeviceIdentityRecordSchema, device.record));
    }
    return { ok: true, kind: "published", deviceIds: checked.map((d) => d.body.deviceId) };
  }

  private setBlocked(homeserverId: string, blocked: boolean, writer: IdentityWriter): IdentityResult {
    if (!isValidDeviceHomeserver(homeserverId)) return refuse("invalid", `${JSON.stringify(homeserverId)} is not a homeserver id`);
    this.index.setBlocked(homeserverId, blocked);
    if (blocked) writer.put(tagged(blockedTag, homeserverId), new TextEncoder().encode(homeserverId));
    else writer.delete(tagged(blockedTag, homeserverId));
    return { ok: true, kind: "blocked", homeserverId, blocked };
  }
}
