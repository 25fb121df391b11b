#!/usr/bin/env node
// The epochd command. Sources are TypeScript, loaded through tsx so that a
// fresh `npm ci` is enough to run every command: no build step to forget.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
