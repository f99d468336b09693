/**
 * The server's modules for programs that build their own process around it
 * (the benchmark servers): bundled next to `main.ts` by `npm run build`, so
 * they run the same compiled code as `npm start`.
 */
export { build } from "./app.js";
export { loadConfig } from "./config.js";
export { encodeCursor, toUser } from "./services/user-service.js";
export { openStore } from "./storage/index.js";
