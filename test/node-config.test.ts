import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, envName, flagName, loadNodeConfig, parsePeers, raftTicks } from "../src/node/config.ts";

describe("homeserver configuration", () => {
  const dir = mkdtempSync(join(tmpdir(), "epochd-config-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("layers defaults, file, environment and flags in that order", () => {
    const file = join(dir, "hs2.yaml");
    writeFileSync(file, "id: hs2\ndataDir: d2\nelectionTimeoutMs: 2000\ninsecure: true\n");
    const config = loadNodeConfig(new Map([["config", file], ["heartbeat-interval-ms", "200"]]), { EPOCHD_ELECTION_TIMEOUT_MS: "3000" });
    expect(config).toMatchObject({ id: "hs2", dataDir: join(dir, "d2"), electionTimeoutMs: 3000, heartbeatIntervalMs: 200, tickIntervalMs: 50 });
    expect(raftTicks(config)).toEqual({ electionTimeoutTicks: 60, heartbeatTicks: 4 });
    const bounded = loadNodeConfig(new Map([["config", file], ["hibernate-after-ms", "0"]]), { EPOCHD_LOADED_GROUPS_MAX: "512" });
    expect(bounded).toMatchObject({ hibernateAfterMs: 0, loadedGroupsMax: 512 });
  });

  it("the example in cluster/ is valid", () => {
    const config = loadNodeConfig(new Map([["config", "cluster/hs1.example.yaml"]]), {});
    expect(config.peers.map((p) => p.id)).toEqual(["hs1", "hs2", "hs3"]);
  });

  it("names the option that is wrong", () => {
    const load = (flags: Record<string, string>) => () => loadNodeConfig(new Map(Object.entries(flags)), {});
    expect(load({ insecure: "true", "election-timeout-ms": "100" })).toThrow(/electionTimeoutMs must be at least 3 x heartbeatIntervalMs/);
    expect(load({ insecure: "true", "no-such-thing": "1" })).toThrow(/unknown flag --no-such-thing/);
    expect(load({ insecure: "true", "election-timeout-ms": "soon" })).toThrow(ConfigError);
    expect(load({})).toThrow(/TLS needs/);
    expect(load({ insecure: "true", id: "bad id" })).toThrow(/not a valid homeserver id/);
    expect(load({ insecure: "true", "loaded-groups-max": "-1" })).toThrow(/loadedGroupsMax must be 0/);
    expect(() => parsePeers("hs1=a:1")).toThrow(/not id=peerHost:port\/clientHost:port/);
  });

  it("derives flag and environment names from option names", () => {
    expect(flagName("electionTimeoutMs")).toBe("election-timeout-ms");
    expect(envName("electionTimeoutMs")).toBe("EPOCHD_ELECTION_TIMEOUT_MS");
  });
});
