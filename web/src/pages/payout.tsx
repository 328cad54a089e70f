import { useState } from "preact/hooks";
import { api, call } from "../api/client";
import type { Recipient } from "../api/types";
import { CURRENCIES } from "../money";
import type { Route } from "../router";
import { useUser } from "../session";
import { ErrorText, Field, Notice, useAction, useLoad } from "../ui";
import { LoginFirst } from "./auth";

export function PayoutPage({ route }: { route: Route }) {
  const user = useUser();
  const [currency, setCurrency] = useState(route.query.get("currency") ?? "NGN");
  const [bank, setBank] = useState("");
  const [accountNumber, setAccountNumber] = useState("");
  const [name, setName] = useState("");
  const [key, setKey] = useState(() => crypto.randomUUID());
  const [saved, setSaved] = useState<Recipient | null>(null);
  const banks = useLoad(() => call(api.GET("/v1/banks", { params: { query: { currency } } })), [currency]);
  const { run, busy, error } = useAction(async () => {
    const reply = await call(
      api.POST("/v1/payout-recipients", {
        body: { account_number: accountNumber.trim(), bank_code: bank, name, currency, idempotency_key: key },
      }),
    );
    setKey(crypto.randomUUID());
    setSaved(reply.recipient ?? null);
  });
  if (!user) return <LoginFirst what="set your payout account" />;
  return (
    <section class="narrow">
      <h1>Payout account</h1>
      <p>Where the money of your goals is paid once contributors approve your proof.</p>
      <form onSubmit={(e) => (e.preventDefault(), void run())}>
        <div class="field">
          <label for="payout-currency">Currency</label>
          <select id="payout-currency" value={currency} onChange={(e) => (setCurrency(e.currentTarget.value), setBank(""))}>
            {CURRENCIES.map((c) => (
              <option value={c}>{c}</option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="bank">Bank</label>
          <select id="bank" required value={bank} onChange={(e) => setBank(e.currentTarget.value)} aria-busy={!banks.value}>
            <option value="">Choose a bank…</option>
            {banks.value?.banks?.map((b) => (
              <option value={b.code}>{b.name}</option>
            ))}
          </select>
          <ErrorText error={banks.error} />
        </div>
        <Field id="account-number" label="Account number" inputMode="numeric" autoComplete="off" required value={accountNumber} onInput={(e) => setAccountNumber(e.currentTarget.value)} />
        <Field id="account-holder" label="Account holder's name" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
        <ErrorText error={error} />
        <button type="submit" disabled={busy}>
          {busy ? "Checking the account…" : "Save payout account"}
        </button>
      </form>
      {saved && (
        <Notice>
          Saved: <strong data-testid="resolved-name">{saved.account_name || saved.name}</strong>, account ending{" "}
          {saved.account_number_last4} ({saved.currency}). The bank knows this account by that name.
        </Notice>
      )}
    </section>
  );
}
