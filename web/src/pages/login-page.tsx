import { useMutation } from "@connectrpc/connect-query";
import { type FormEvent, useMemo, useState } from "react";
import { AuthService } from "../../../gen/switchboard/auth/v1/auth_pb.js";
import { useSession } from "../auth/use-session.js";
import { ErrorNotice, useRetryUntil } from "../components/error-notice.js";
import { Field } from "../components/field.js";
import { fieldErrors, rpcError } from "../errors.js";
import { useCountdown } from "../hooks/use-countdown.js";
import { usePageHeading } from "../hooks/use-page-title.js";
import { href, navigate } from "../hooks/use-route.js";

export interface LoginState {
  readonly username?: string;
  readonly registered?: boolean;
}

export function LoginPage({ next }: { readonly next?: string }) {
  const { session, notice } = useSession();
  const state = (window.history.state ?? {}) as LoginState;
  const [username, setUsername] = useState(state.username ?? "");
  const [password, setPassword] = useState("");
  const heading = usePageHeading<HTMLHeadingElement>("Sign in");
  const login = useMutation(AuthService.method.login, {
    onSuccess: (res) => {
      session.signIn(res);
      navigate(next ?? "/", { replace: true });
    },
  });
  const error = useMemo(() => (login.error ? rpcError(login.error) : undefined), [login.error]);
  const until = useRetryUntil(error);
  const waiting = useCountdown(until) > 0;

  const submit = (e: FormEvent) => {
    e.preventDefault();
    login.mutate({ username: username.trim(), password });
  };

  return (
    <main className="auth-page" id="main">
      <section className="card auth-card" aria-labelledby="login-title">
        <h1 id="login-title" ref={heading} tabIndex={-1}>
          Sign in
        </h1>
        <p className="muted">Welcome back to Switchboard.</p>
        {state.registered && !error && (
          <div className="notice notice--success" role="status">
            <p className="notice__text">Your account is ready. Sign in to continue.</p>
          </div>
        )}
        {notice && !error && !state.registered && (
          <div className="notice notice--info" role="status">
            <p className="notice__text">{notice}</p>
          </div>
        )}
        <form onSubmit={submit} noValidate>
          <Field
            label="Username or email"
            name="username"
            autoComplete="username"
            autoCapitalize="none"
            spellCheck={false}
            required
            value={username}
            onChange={(e) => setUsername(e.target.value)}
            errors={fieldErrors(error, "username")}
          />
          <Field
            label="Password"
            name="password"
            type="password"
            autoComplete="current-password"
            required
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            errors={fieldErrors(error, "password")}
          />
          {error && <ErrorNotice error={error} />}
          <button
            type="submit"
            className="button button--primary button--block"
            disabled={login.isPending || waiting}
          >
            {login.isPending ? "Signing in…" : "Sign in"}
          </button>
        </form>
        <p className="auth-card__switch">
          New here?{" "}
          <a
            href={href("/register")}
            onClick={(e) => {
              e.preventDefault();
              navigate("/register");
            }}
          >
            Create an account
          </a>
        </p>
      </section>
    </main>
  );
}
