import { ConnectError } from "@connectrpc/connect";
import { build } from "./app.js";
import { ConfigError, loadConfig } from "./config.js";
import { createLogger } from "./logger.js";
import { openStore } from "./storage/index.js";

/** Signals this close together count as one (see `stop`). */
const DUPLICATE_SIGNAL_MS = 500;

/**
 * The entry point: the only place that reads `process.env` and listens.
 * Exit codes: 0 after a graceful shutdown, 2 for bad configuration, 1 when
 * the server cannot start (database unreachable, port taken, …).
 */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`switchboard: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.log);

  let store: Awaited<ReturnType<typeof openStore>>;
  try {
    store = await openStore({
      dataDir: config.dataDir,
      databaseUrl: config.databaseUrl,
      logger,
    });
  } catch (err) {
    const message = err instanceof ConnectError ? err.rawMessage : String(err);
    logger.fatal(
      { err: err instanceof ConnectError ? err.cause : err },
      `cannot open storage: ${message}`,
    );
    process.exitCode = 1;
    return;
  }

  const app = await build(config, { store, logger });
  let url: string;
  try {
    url = await app.listen();
  } catch (err) {
    logger.fatal({ err }, `cannot listen on ${config.host}:${config.port}`);
    await store.close();
    process.exitCode = 1;
    return;
  }
  logger.info(
    { url, storage: store.kind, tls: config.tls !== undefined, pid: process.pid },
    `Switchboard listening on ${url} (gRPC, gRPC-Web and Connect)`,
  );

  let stoppingSince: number | undefined;
  const stop = (signal: NodeJS.Signals) => {
    if (stoppingSince !== undefined) {
      // A terminal's Ctrl-C reaches the whole process group: this process
      // and `npm start`'s launcher, which forwards it too. The same signal
      // arriving twice within moments is one Ctrl-C; a second Ctrl-C later
      // forces the exit.
      if (Date.now() - stoppingSince < DUPLICATE_SIGNAL_MS) return;
      logger.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    stoppingSince = Date.now();
    logger.info({ signal, graceMs: config.shutdownGraceMs }, "shutting down");
    app.shutdown().then(
      () => {
        logger.info("shutdown complete");
        logger.flush();
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

await main();
