import { useState } from "preact/hooks";
import { api, call } from "../api/client";
import { href, navigate } from "../router";
import { session, useUser } from "../session";
import { ErrorText, Field, Notice, formatTime, useAction, useLoad } from "../ui";
import { LoginFirst } from "./auth";

export function AccountPage() {
  const user = useUser();
  if (!user) return <LoginFirst what="see your account" />;
  return (
    <section>
      <h1>Your account</h1>
      <Profile />
      <Sessions />
    </section>
  );
}

function Profile() {
  const { value, error, setValue } = useLoad(() => call(api.GET("/v1/users/me")), []);
  const [code, setCode] = useState("");
  const [sent, setSent] = useState(false);
  const user = value?.user;
  const request = useAction(async () => {
    await call(api.POST("/v1/users/me:requestEmailVerification", { body: {} }));
    setSent(true);
  });
  const verify = useAction(async () => {
    const reply = await call(api.POST("/v1/users/me:verifyEmail", { body: { code: code.trim() } }));
    setValue(reply);
    const me = session.user();
    if (me) session.update({ ...me, email_verified: !!reply.user?.email_verified });
  });
  if (error) return <ErrorText error={error} />;
  if (!user) return <p aria-busy="true">Loading…</p>;
  return (
    <section class="panel" aria-labelledby="profile-heading">
      <h2 id="profile-heading">Profile</h2>
      <dl>
        <dt>Username</dt>
        <dd>{user.username}</dd>
        <dt>Name</dt>
        <dd>{[user.first_name, user.last_name].filter(Boolean).join(" ") || "—"}</dd>
        <dt>Email</dt>
        <dd>
          {user.email}{" "}
          <span class={user.email_verified ? "badge badge-succeeded" : "badge badge-pending"} data-testid="email-verified">
            {user.email_verified ? "verified" : "not verified"}
          </span>
        </dd>
      </dl>
      {!user.email_verified && (
        <div>
          <h3>Verify your email</h3>
          <button type="button" disabled={request.busy} onClick={() => void request.run()}>
            {sent ? "Send another code" : "Email me a code"}
          </button>
          <ErrorText error={request.error} />
          {sent && <Notice>We sent a 6-digit code to {user.email}.</Notice>}
          <form class="inline" onSubmit={(e) => (e.preventDefault(), void verify.run())}>
            <Field id="code" label="Code from the email" inputMode="numeric" autoComplete="one-time-code" required value={code} onInput={(e) => setCode(e.currentTarget.value)} />
            <button type="submit" disabled={verify.busy}>
              Verify
            </button>
          </form>
          <ErrorText error={verify.error} />
        </div>
      )}
    </section>
  );
}

function Sessions() {
  const { value, error, reload } = useLoad(() => call(api.GET("/v1/users/me/sessions", { params: { query: { page_size: 100 } } })), []);
  const revoke = useAction(async (id: string, current: boolean) => {
    await call(api.DELETE("/v1/users/me/sessions/{session_id}", { params: { path: { session_id: id } } }));
    if (current) {
      session.clear();
      navigate(href("login"));
    } else reload();
  });
  return (
    <section class="panel" aria-labelledby="sessions-heading">
      <h2 id="sessions-heading">Where you are logged in</h2>
      <ErrorText error={error ?? revoke.error} />
      <ul class="sessions">
        {value?.sessions?.map((s) => (
          <li data-session={s.id}>
            <span>
              <strong>{s.device_name || s.user_agent || "Unknown device"}</strong>
              {s.current && <> (this browser)</>}
              <br />
              <small>
                {s.ip_address} · since {formatTime(s.created_at)} · last seen {formatTime(s.last_seen_at)}
              </small>
            </span>
            <button type="button" class="secondary" disabled={revoke.busy} onClick={() => void revoke.run(s.id!, !!s.current)}>
              {s.current ? "Log out here" : "Revoke"}
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}
