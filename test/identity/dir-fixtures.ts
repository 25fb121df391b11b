/** Registering users with mutually linked devices through a MachineHarness, for the identity and KeyPackage tests. */
import { expect } from "vitest";
import { Device } from "../../src/client/device.ts";
import { generateInboxKeyPair, signIdentityRecord } from "../../src/client/identity-record.ts";
import { clusterId, sponsored, type MachineHarness, type TestHomeserver } from "./machine-harness.ts";

const inboxKey = generateInboxKeyPair().publicKeyRaw;

/** Creates devices `deviceIds` of `userName` (all on `sponsor`), each linking all the others, in one publish. */
export async function registerUser(h: MachineHarness, userName: string, deviceIds: readonly string[], sponsor: TestHomeserver): Promise<Device[]> {
  const devices = await Promise.all(deviceIds.map((id) => Device.create(id)));
  const records = await Promise.all(
    devices.map(async (device) =>
      sponsored(
        await signIdentityRecord(device, { clusterId, userName, inboxPublicKey: inboxKey, sequence: 1n, createdAtMs: 1_700_000_000_000, linkedDeviceIds: deviceIds.filter((id) => id !== device.id) }),
        sponsor,
      ),
    ),
  );
  expect(await h.publish(records)).toMatchObject({ ok: true });
  return devices;
}
