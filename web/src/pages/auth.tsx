import { useState } from "preact/hooks";
import { api, call } from "../api/client";
import { href, navigate, type Route } from "../router";
import { session } from "../session";
import { ErrorText, Field, useAction } from "../ui";

async function logIn(login: string, password: string): Promise<void> {
  const reply = await call(api.POST("/v1/sessions", { body: { login, password, device_name: navigator.userAgent.slice(0, 60) } }));
  const user = reply.user!;
  session.set(reply.token!, {
    id: user.id!,
    username: user.username!,
    email: user.email!,
    email_verified: !!user.email_verified,
  });
}

/** Where to go once signed in: back to the page that asked (?next=), else home. */
function next(route: Route): string {
  const to = route.query.get("next") ?? "";
  return to.startsWith("#/") ? to : href();
}

export function LoginPage({ route }: { route: Route }) {
  const [login, setLogin] = useState("");
  const [password, setPassword] = useState("");
  const { run, busy, error } = useAction(async () => {
    await logIn(login, password);
    navigate(next(route));
  });
  return (
    <section class="narrow">
      <h1>Log in</h1>
      <form onSubmit={(e) => (e.preventDefault(), void run())}>
        <Field id="login" label="Email or username" autoComplete="username" required value={login} onInput={(e) => setLogin(e.currentTarget.value)} />
        <Field id="password" label="Password" type="password" autoComplete="current-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        <ErrorText error={error} />
        <button type="submit" disabled={busy}>
          {busy ? "Logging in…" : "Log in"}
        </button>
      </form>
      <p>
        New here? <a href={href("register") + (route.query.get("next") ? `?next=${encodeURIComponent(next(route))}` : "")}>Register</a>.
      </p>
    </section>
  );
}

export function RegisterPage({ route }: { route: Route }) {
  const [form, setForm] = useState({ email: "", username: "", password: "", first_name: "", last_name: "", phone: "" });
  const set = (key: keyof typeof form) => (e: { currentTarget: HTMLInputElement }) => setForm({ ...form, [key]: e.currentTarget.value });
  const { run, busy, error } = useAction(async () => {
    await call(api.POST("/v1/users", { body: form }));
    await logIn(form.username, form.password);
    navigate(route.query.get("next") ? next(route) : href("account"));
  });
  return (
    <section class="narrow">
      <h1>Register</h1>
      <form onSubmit={(e) => (e.preventDefault(), void run())}>
        <Field id="email" label="Email" type="email" autoComplete="email" required value={form.email} onInput={set("email")} />
        <Field id="username" label="Username" autoComplete="username" required hint="3 to 32 letters, digits, dots or underscores." value={form.username} onInput={set("username")} />
        <Field id="password" label="Password" type="password" autoComplete="new-password" required minLength={10} hint="At least 10 characters." value={form.password} onInput={set("password")} />
        <Field id="first_name" label="First name (optional)" autoComplete="given-name" value={form.first_name} onInput={set("first_name")} />
        <Field id="last_name" label="Last name (optional)" autoComplete="family-name" value={form.last_name} onInput={set("last_name")} />
        <Field id="phone" label="Phone (optional)" type="tel" autoComplete="tel" hint="International form, e.g. +2348012345678." value={form.phone} onInput={set("phone")} />
        <ErrorText error={error} />
        <button type="submit" disabled={busy}>
          {busy ? "Creating your account…" : "Create account"}
        </button>
      </form>
      <p>
        Already registered? <a href={href("login")}>Log in</a>.
      </p>
    </section>
  );
}

/** Shown in place of a form that needs a signed-in user. */
export function LoginFirst({ what }: { what: string }) {
  const here = location.hash || "#/";
  return (
    <p class="notice">
      <a href={`${href("login")}?next=${encodeURIComponent(here)}`}>Log in</a> or{" "}
      <a href={`${href("register")}?next=${encodeURIComponent(here)}`}>register</a> to {what}.
    </p>
  );
}
