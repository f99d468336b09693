import type { DescService } from "@bufbuild/protobuf";
import type { CallOptions, Client, Interceptor } from "@connectrpc/connect";
import type { Command } from "commander";
import { AuthService } from "../../gen/switchboard/auth/v1/auth_pb.js";
import { CredentialStore, configDir } from "./credentials.js";
import { Output } from "./output.js";
import { authInterceptor, Session } from "./session.js";
import {
  client,
  createTransport,
  type Endpoint,
  type Protocol,
  resolveEndpoint,
} from "./transport.js";

/** The program-wide options every command sees. */
export interface GlobalOptions {
  readonly addr?: string;
  readonly protocol: Protocol;
  readonly tls?: boolean;
  readonly ca?: string;
  readonly insecure?: boolean;
  readonly token?: string;
  readonly timeout?: number;
  readonly json?: boolean;
}

export const USER_AGENT = `switchboard-cli/0.1.0 node/${process.versions.node}`;

const userAgent: Interceptor = (next) => (req) => {
  req.header.set("user-agent", USER_AGENT);
  return next(req);
};

/** What a command works with: output, the server, the session, clients. */
export class Context {
  readonly output: Output;
  readonly endpoint: Endpoint;
  readonly protocol: Protocol;
  readonly store: CredentialStore;
  readonly session: Session;
  readonly timeoutMs: number | undefined;

  constructor(options: GlobalOptions) {
    this.output = new Output(!!options.json);
    this.endpoint = resolveEndpoint(options);
    this.protocol = options.protocol;
    this.timeoutMs = options.timeout;
    this.store = new CredentialStore(configDir());
    this.session = new Session({
      store: this.store,
      server: this.endpoint.key,
      ...(options.token ? { explicitToken: options.token } : {}),
      authClient: () => this.publicClient(AuthService),
      ...(options.timeout ? { timeoutMs: options.timeout } : {}),
    });
    if (this.endpoint.insecure) {
      this.output.warn(
        "--insecure: the server's TLS certificate is NOT verified. Anyone on the network path " +
          "can impersonate the server and read your password and tokens. Use --ca <file> instead.",
      );
    }
  }

  /** A client whose calls carry the session's access token (refreshed as needed). */
  client<T extends DescService>(service: T, options: { bidi?: boolean } = {}): Client<T> {
    const transport = createTransport(
      this.endpoint,
      this.protocol,
      [userAgent, authInterceptor(this.session)],
      options,
    );
    return client(service, transport);
  }

  /** A client without credentials (RegisterUser, Login, Refresh). */
  publicClient<T extends DescService>(service: T): Client<T> {
    return client(service, createTransport(this.endpoint, this.protocol, [userAgent]));
  }

  /** Call options every call gets (--timeout). */
  callOptions(extra: CallOptions = {}): CallOptions {
    return this.timeoutMs === undefined ? extra : { timeoutMs: this.timeoutMs, ...extra };
  }
}

/** Runs a command's body with a Context built from the program's options. */
export type RunFn = (command: Command, body: (ctx: Context) => Promise<void>) => Promise<void>;
