/**
 * The witnesses GroupContext extension: a strict encoding (sorted, no repeats, homeserver ids, at most
 * four), and the voters a client derives from its own MLS state: its tree's homeservers and its witnesses.
 */
import { describe, expect, it } from "vitest";
import { channelVoters } from "../../src/client/channel.ts";
import { decodeWitnesses, encodeWitnesses, witnessesExtension, witnessesExtensionType, witnessesOf } from "../../src/mls/witnesses.ts";
import { buildGroup, memberOf } from "../fixtures/mls-group.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

describe("witnesses extension", () => {
  it("round-trips sorted, unique homeserver ids", () => {
    expect(decodeWitnesses(encodeWitnesses(["hs3", "hs2", "hs3"]))).toEqual(["hs2", "hs3"]);
    expect(witnessesOf([])).toEqual([]);
    expect(witnessesOf([witnessesExtension(["hs4"])])).toEqual(["hs4"]);
  });

  it("refuses anything else", () => {
    expect(decodeWitnesses(bytes("hs3\nhs2"))).toHaveProperty("reason");
    expect(decodeWitnesses(bytes("hs2\nhs2"))).toHaveProperty("reason");
    expect(decodeWitnesses(bytes(""))).toHaveProperty("reason");
    expect(decodeWitnesses(bytes("hs 1"))).toHaveProperty("reason");
    expect(decodeWitnesses(bytes("a\nb\nc\nd\ne"))).toHaveProperty("reason");
    expect(decodeWitnesses(Uint8Array.of(0xff, 0xfe))).toHaveProperty("reason");
    expect(witnessesOf([witnessesExtension(["hs2"]), { extensionType: witnessesExtensionType, extensionData: bytes("hs3") }])).toHaveProperty("reason");
    expect(() => encodeWitnesses(["a", "b", "c", "d", "e"])).toThrow(RangeError);
  });

  it("a client counts its tree's homeservers and its own group's witnesses as the voters of a certificate", async () => {
    const plain = await buildGroup(["alice@hs1", "bob@hs2"]);
    expect(channelVoters(memberOf(plain, "alice@hs1").state)).toEqual(["hs1", "hs2"]);
    const witnessed = await buildGroup(["alice@hs1", "bob@hs2"], undefined, ["hs3"]);
    expect(channelVoters(memberOf(witnessed, "bob@hs2").state)).toEqual(["hs1", "hs2", "hs3"]);
  });
});
