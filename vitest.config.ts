import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The exploratory commit-ordering property (issue 4) still finds open SDK and ts-mls bugs on some
    // seeds; it runs on its own with `npm run test:ordering` until they are fixed.
    exclude: process.env["EPOCHD_ORDERING_PROPERTY"] === "1" ? [] : ["test/client/ordering-property.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: "forks",
  },
});
