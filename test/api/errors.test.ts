import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { toServiceError } from "../../src/api/errors.ts";
import { ProposalRefusedError } from "../../src/multiraft/errors.ts";

describe("gRPC status of a refused proposal", () => {
  it("is RESOURCE_EXHAUSTED for back-pressure, UNAVAILABLE (retry) for a hand-over or a membership change in flight", () => {
    expect(toServiceError(new ProposalRefusedError("g", "overloaded")).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(toServiceError(new ProposalRefusedError("g", "leadership-transfer")).code).toBe(grpc.status.UNAVAILABLE);
    expect(toServiceError(new ProposalRefusedError("g", "conf-change-pending")).code).toBe(grpc.status.UNAVAILABLE);
  });
});
