import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

/**
 * The web app. `npm run build:web` writes web/dist, which the server serves
 * from the API's own port; `npm run dev` runs this dev server (HMR) and
 * proxies the RPC paths to the Switchboard server.
 */

/** Where the dev server forwards RPCs (scripts/dev.mjs sets it). */
const api = process.env.SWITCHBOARD_API_URL ?? "http://127.0.0.1:8080";

/** Every RPC is a POST to `/<package>.<Service>/<Method>`. */
const rpcPaths = {
  "^/(switchboard|grpc)\\.": { target: api, changeOrigin: false, ws: false },
};

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  plugins: [react()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: true,
    // protobuf-es descriptors make one chunk of ~300 kB; fine for this app.
    chunkSizeWarningLimit: 800,
  },
  server: {
    host: "127.0.0.1",
    port: Number(process.env.WEB_PORT ?? 5173),
    strictPort: true,
    proxy: rpcPaths,
  },
  preview: { host: "127.0.0.1", proxy: rpcPaths },
});
