import { useMutation } from "@connectrpc/connect-query";
import { type FormEvent, useEffect, useMemo, useRef, useState } from "react";
import { UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import { ErrorNotice, useRetryUntil } from "../components/error-notice.js";
import { Field } from "../components/field.js";
import { fieldErrors, type RpcError, rpcError } from "../errors.js";
import { useCountdown } from "../hooks/use-countdown.js";
import { usePageHeading } from "../hooks/use-page-title.js";
import { href, navigate } from "../hooks/use-route.js";
import type { LoginState } from "./login-page.js";

/** Which field an AlreadyExists reason belongs to. */
const CONFLICT_FIELD: Record<string, { field: string; text: string }> = {
  USERNAME_TAKEN: { field: "username", text: "is already taken" },
  EMAIL_TAKEN: { field: "email", text: "is already registered" },
};

/** Violations per form field: BadRequest fields, plus AlreadyExists on its field. */
function errorsFor(error: RpcError | undefined, field: string): readonly string[] {
  const conflict = error?.reason ? CONFLICT_FIELD[error.reason] : undefined;
  if (conflict?.field === field) return [conflict.text];
  return fieldErrors(error, field);
}

export function RegisterPage() {
  const [form, setForm] = useState({ username: "", email: "", displayName: "", password: "" });
  const heading = usePageHeading<HTMLHeadingElement>("Create an account");
  const register = useMutation(UserService.method.registerUser, {
    onSuccess: (res) => {
      const state: LoginState = { username: res.user?.username ?? form.username, registered: true };
      navigate("/login", { state });
    },
  });
  const error = useMemo(
    () => (register.error ? rpcError(register.error) : undefined),
    [register.error],
  );
  const waiting = useCountdown(useRetryUntil(error)) > 0;
  // Field-level problems are shown under their fields; only the rest up top.
  const fieldLevel =
    error !== undefined &&
    (Object.keys(error.fieldViolations).length > 0 ||
      (error.reason !== undefined && error.reason in CONFLICT_FIELD));

  // Take keyboard and screen reader users to the first bad field.
  const formRef = useRef<HTMLFormElement>(null);
  useEffect(() => {
    if (!error) return;
    formRef.current?.querySelector<HTMLInputElement>("[aria-invalid=true]")?.focus();
  }, [error]);

  const set = (name: keyof typeof form) => (e: { target: { value: string } }) =>
    setForm((f) => ({ ...f, [name]: e.target.value }));

  const submit = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    register.mutate({
      username: form.username.trim(),
      email: form.email.trim(),
      displayName: form.displayName.trim(),
      password: form.password,
    });
  };

  return (
    <main className="auth-page" id="main">
      <section className="card auth-card" aria-labelledby="register-title">
        <h1 id="register-title" ref={heading} tabIndex={-1}>
          Create an account
        </h1>
        <p className="muted">Join Switchboard to see who's here and chat live.</p>
        <form onSubmit={submit} noValidate ref={formRef}>
          <Field
            label="Username"
            name="username"
            autoComplete="username"
            autoCapitalize="none"
            spellCheck={false}
            required
            hint="3–32 letters, digits, '.', '_' or '-'."
            value={form.username}
            onChange={set("username")}
            errors={errorsFor(error, "username")}
          />
          <Field
            label="Email"
            name="email"
            type="email"
            autoComplete="email"
            required
            value={form.email}
            onChange={set("email")}
            errors={errorsFor(error, "email")}
          />
          <Field
            label="Display name"
            name="displayName"
            autoComplete="name"
            hint="Optional. How others see you."
            value={form.displayName}
            onChange={set("displayName")}
            errors={errorsFor(error, "display_name")}
          />
          <Field
            label="Password"
            name="password"
            type="password"
            autoComplete="new-password"
            required
            hint="At least 8 characters."
            value={form.password}
            onChange={set("password")}
            errors={errorsFor(error, "password")}
          />
          {error && !fieldLevel && <ErrorNotice error={error} />}
          {error && fieldLevel && (
            <p className="sr-only" role="alert">
              Please correct the highlighted fields.
            </p>
          )}
          <button
            type="submit"
            className="button button--primary button--block"
            disabled={register.isPending || waiting}
          >
            {register.isPending ? "Creating account…" : "Create account"}
          </button>
        </form>
        <p className="auth-card__switch">
          Already have an account?{" "}
          <a
            href={href("/login")}
            onClick={(e) => {
              e.preventDefault();
              navigate("/login");
            }}
          >
            Sign in
          </a>
        </p>
      </section>
    </main>
  );
}
