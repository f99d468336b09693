import { existsSync } from "node:fs";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { join } from "node:path";
import fastifyStatic from "@fastify/static";
import type { FastifyBaseLogger, FastifyInstance } from "fastify";

/** Where `npm run build:web` writes the app. */
export const DEFAULT_WEB_DIST = new URL(
  // From server/src/protocol/, or from the bundle in dist/ (npm run build).
  import.meta.url.includes("/server/src/protocol/") ? "../../../web/dist" : "../web/dist",
  import.meta.url,
).pathname;

/**
 * Serves the built web app from the API's own port (one origin: no CORS).
 * RPCs are POSTs to `/<package>.<Service>/<Method>`; everything else that a
 * browser GETs is a file of the app, or the app's index.html for its client
 * side routes. Returns false (serving nothing) when the app is not built.
 */
export async function registerWebApp<L extends FastifyBaseLogger>(
  fastify: FastifyInstance<Server, IncomingMessage, ServerResponse, L>,
  root: string = DEFAULT_WEB_DIST,
): Promise<boolean> {
  if (!existsSync(join(root, "index.html"))) return false;
  await fastify.register(fastifyStatic, {
    root,
    // Hashed assets never change; index.html must be revalidated.
    setHeaders(res, path) {
      res.setHeader(
        "cache-control",
        path.includes("/assets/") ? "public, max-age=31536000, immutable" : "no-cache",
      );
    },
  });
  fastify.setNotFoundHandler((req, reply) => {
    if (req.method === "GET" && (req.headers.accept ?? "").includes("text/html")) {
      return reply.type("text/html").sendFile("index.html");
    }
    return reply
      .code(404)
      .send({ code: "not_found", message: `no route for ${req.method} ${req.url}` });
  });
  return true;
}
