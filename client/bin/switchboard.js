#!/usr/bin/env node
// The `switchboard` command: runs the TypeScript sources through tsx, with
// the repository's tsconfig whatever the current directory.
import { fileURLToPath } from "node:url";
import { register } from "tsx/esm/api";

register({ tsconfig: fileURLToPath(new URL("../../tsconfig.json", import.meta.url)) });
await import("../src/main.ts");
