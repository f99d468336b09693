import { existsSync } from "node:fs";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { join, relative, sep } from "node:path";
import fastifyHelmet from "@fastify/helmet";
import fastifyStatic from "@fastify/static";
import type { FastifyBaseLogger, FastifyInstance } from "fastify";

/** Where `npm run build:web` writes the app. */
export const DEFAULT_WEB_DIST = new URL(
  // From server/src/protocol/, or from the bundle in dist/ (npm run build).
  import.meta.url.includes("/server/src/protocol/") ? "../../../web/dist" : "../web/dist",
  import.meta.url,
).pathname;

/** Cache-Control of the content-hashed files Vite writes under /assets. */
export const ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable";

/** Cache-Control of index.html (and the client-side routes answered with it). */
export const INDEX_CACHE_CONTROL = "no-cache";

/**
 * The web app's Content-Security-Policy. The built app is one module script,
 * one stylesheet and its RPCs to this origin: nothing inline, no eval, no
 * framing. `img-src data:` is for the favicon written inline in index.html;
 * React's `style={…}` goes through the CSSOM, which `style-src` does not
 * govern. Not `upgrade-insecure-requests`: the server may well be plain HTTP.
 */
export const WEB_APP_CSP: Readonly<Record<string, readonly string[]>> = Object.freeze({
  "default-src": ["'self'"],
  "script-src": ["'self'"],
  "style-src": ["'self'"],
  "img-src": ["'self'", "data:"],
  "font-src": ["'self'"],
  "connect-src": ["'self'"],
  "object-src": ["'none'"],
  "base-uri": ["'none'"],
  "form-action": ["'self'"],
  "frame-ancestors": ["'none'"],
});

/** Options for {@link registerWebApp}. */
export interface WebAppOptions {
  /** The built app (default: web/dist). */
  readonly root?: string;
  /** Send Strict-Transport-Security (only meaningful when the port speaks TLS). */
  readonly hsts?: boolean;
}

/**
 * Serves the built web app from the API's own port (one origin: no CORS).
 * RPCs are POSTs to `/<package>.<Service>/<Method>`; everything else that a
 * browser GETs is a file of the app, or the app's index.html for its client
 * side routes. The app's responses carry security headers (@fastify/helmet:
 * the CSP above, nosniff, `X-Frame-Options: DENY`, `Referrer-Policy:
 * no-referrer`) and cache headers (index.html revalidated, hashed assets
 * cached for a year); RPC responses carry neither, since helmet lives in
 * this plugin's own encapsulated scope. Returns false (serving nothing) when
 * the app is not built.
 */
export async function registerWebApp<L extends FastifyBaseLogger>(
  fastify: FastifyInstance<Server, IncomingMessage, ServerResponse, L>,
  options: WebAppOptions = {},
): Promise<boolean> {
  const root = options.root ?? DEFAULT_WEB_DIST;
  if (!existsSync(join(root, "index.html"))) return false;
  const assets = `assets${sep}`;
  await fastify.register(async (scope) => {
    await scope.register(fastifyHelmet, {
      global: true,
      contentSecurityPolicy: { useDefaults: false, directives: { ...WEB_APP_CSP } },
      xFrameOptions: { action: "deny" },
      referrerPolicy: { policy: "no-referrer" },
      strictTransportSecurity: options.hsts === true,
    });
    await scope.register(fastifyStatic, {
      root,
      // @fastify/send's own Cache-Control would overwrite the one below.
      cacheControl: false,
      setHeaders(res, path) {
        res.setHeader(
          "cache-control",
          relative(root, path).startsWith(assets) ? ASSET_CACHE_CONTROL : INDEX_CACHE_CONTROL,
        );
      },
    });
    scope.setNotFoundHandler((req, reply) => {
      if (req.method === "GET" && (req.headers.accept ?? "").includes("text/html")) {
        return reply.type("text/html").sendFile("index.html");
      }
      return reply
        .code(404)
        .send({ code: "not_found", message: `no route for ${req.method} ${req.url}` });
    });
  });
  return true;
}
