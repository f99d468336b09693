import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "./config.js";

describe("loadConfig", () => {
  it("applies the documented defaults to an empty environment", () => {
    const config = loadConfig({});
    expect(config.port).toBe(8080);
    expect(config.host).toBe("127.0.0.1");
    expect(config.dataDir).toBe(join(process.cwd(), "data"));
    expect(config.databaseUrl).toBeUndefined();
    expect(config.tls).toBeUndefined();
    expect(config.env).toBe("development");
    expect(config.log.pretty).toBe(true);
    expect(config.maxMessageBytes).toBe(4 * 1024 * 1024);
    expect(Object.isFrozen(config)).toBe(true);
  });

  it("reports every bad variable at once, naming each and its value", () => {
    let error: unknown;
    try {
      loadConfig({
        PORT: "eighty",
        DATABASE_URL: "mysql://x",
        SHUTDOWN_GRACE_MS: "-5",
        LOG_LEVEL: "loud",
      });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join("\n");
    expect(problems).toMatch(/^PORT: must be a number \(got "eighty"\)/m);
    expect(problems).toMatch(/^DATABASE_URL: must be a postgres/m);
    expect(problems).toMatch(/^SHUTDOWN_GRACE_MS: must be at least 1/m);
    expect(problems).toMatch(/^LOG_LEVEL: /m);
    expect((error as ConfigError).problems).toHaveLength(4);
  });

  it("serves RPCs with the engine unless RPC_ENGINE=connect, and refuses other values", () => {
    expect(loadConfig({})).toMatchObject({ rpcEngine: "engine" });
    expect(loadConfig({ RPC_ENGINE: "connect" })).toMatchObject({ rpcEngine: "connect" });
    expect(() => loadConfig({ RPC_ENGINE: "fast" })).toThrow(/RPC_ENGINE: /);
  });

  it("bounds request bytes being read per connection and per process", () => {
    expect(loadConfig({}).bodyBudget).toEqual({
      perConnection: 8 * 1024 * 1024,
      total: 64 * 1024 * 1024,
    });
    expect(loadConfig({ BODY_BYTES_TOTAL: "1000" }).bodyBudget.total).toBe(1000);
  });

  it("throttles failed logins by default: 10 per account+IP, 100 a day per account and per IP, 60 s lockouts up to an hour", () => {
    expect(loadConfig({}).loginThrottle).toEqual({
      consecutiveFailsPerAccountAndIp: 10,
      failsPerAccount: { points: 100, durationSeconds: 86400 },
      failsPerIp: { points: 100, durationSeconds: 86400 },
      lockoutSeconds: 60,
      maxLockoutSeconds: 3600,
    });
  });

  it("refuses login windows over 21 days and a longest lockout shorter than the first", () => {
    expect(() =>
      loadConfig({
        LOGIN_FAILS_PER_ACCOUNT: "100/2000000",
        LOGIN_LOCKOUT_SECONDS: "600",
        LOGIN_LOCKOUT_MAX_SECONDS: "60",
      }),
    ).toThrow(/LOGIN_FAILS_PER_ACCOUNT: seconds must be at most[\s\S]*LOGIN_LOCKOUT_MAX_SECONDS/);
  });

  it("rejects a port out of range", () => {
    expect(() => loadConfig({ PORT: "70000" })).toThrow(/PORT: must be 0\.\.65535/);
  });

  it("treats an empty DATABASE_URL as unset", () => {
    expect(loadConfig({ DATABASE_URL: "" }).databaseUrl).toBeUndefined();
  });

  it("requires TLS_CERT and TLS_KEY together", () => {
    expect(() => loadConfig({ TLS_CERT: "/x.crt" })).toThrow(
      /TLS_KEY: TLS_CERT and TLS_KEY must be set together/,
    );
  });

  it("reports unreadable certificate files instead of crashing", () => {
    expect(() => loadConfig({ TLS_CERT: "/nonexistent.crt", TLS_KEY: "/nonexistent.key" })).toThrow(
      /TLS_CERT: cannot read \/nonexistent\.crt \(ENOENT\)[\s\S]*TLS_KEY: cannot read/,
    );
  });

  it("loads the certificate and key when both are readable", async () => {
    const dir = await mkdtemp(join(tmpdir(), "switchboard-config-"));
    await writeFile(join(dir, "c.pem"), "CERT");
    await writeFile(join(dir, "k.pem"), "KEY");
    const config = loadConfig({ TLS_CERT: join(dir, "c.pem"), TLS_KEY: join(dir, "k.pem") });
    expect(config.tls?.cert.toString()).toBe("CERT");
    expect(config.tls?.key.toString()).toBe("KEY");
  });

  it("logs JSON in production and honours LOG_FORMAT", () => {
    const key = Buffer.alloc(32, 7).toString("base64url");
    expect(loadConfig({ NODE_ENV: "production", AUTH_SIGNING_KEY: key }).log.pretty).toBe(false);
    expect(loadConfig({ NODE_ENV: "development", LOG_FORMAT: "json" }).log.pretty).toBe(false);
  });
});
