import { useEffect, useState } from "preact/hooks";
import { api, call } from "../api/client";
import type { ContributionStatus, MyContribution, Payment } from "../api/types";
import { formatMoney } from "../money";
import { flash, forgetPayment, pendingPayment } from "../payments-memory";
import { href, navigate, type Route } from "../router";
import { useUser } from "../session";
import { ErrorText, Status, StatusFilter, formatTime, useLoad, usePages } from "../ui";
import { LoginFirst } from "./auth";

const VERIFY_ATTEMPTS = 10;
const VERIFY_RETRY_MS = 1000;

/** Where Paystack sends the payer back (the callback URL, with ?reference=): ask the
 * API to verify the payment with Paystack, then go back to the goal. */
export function PaymentReturnPage({ route }: { route: Route }) {
  const reference = route.query.get("reference") ?? route.query.get("trxref") ?? "";
  const pending = pendingPayment(reference);
  const [payment, setPayment] = useState<Payment | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    if (!pending) return;
    let live = true;
    void (async () => {
      for (let attempt = 0; live && attempt < VERIFY_ATTEMPTS; attempt++) {
        try {
          const reply = await call(api.POST("/v1/payments/{payment_id}:verify", { params: { path: { payment_id: pending.payment_id } } }));
          const found = reply.payment!;
          setPayment(found);
          if (found.status !== "PAYMENT_STATUS_PENDING") {
            forgetPayment(reference);
            if (found.status === "PAYMENT_STATUS_SUCCESS") {
              flash(`Thank you: your payment of ${formatMoney(found.amount, found.currency)} is confirmed.`);
              navigate(href("goals", pending.goal_id));
            }
            return;
          }
        } catch (failure) {
          setError(failure);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, VERIFY_RETRY_MS));
      }
    })();
    return () => {
      live = false;
    };
  }, [reference]);

  if (!pending)
    return (
      <section class="narrow">
        <h1>Payment</h1>
        <p>This browser has no record of payment {reference || "(no reference)"}. Your contributions and their statuses are listed under My contributions.</p>
        <a href={href("contributions")}>My contributions</a>
      </section>
    );
  return (
    <section class="narrow" aria-live="polite">
      <h1>Payment</h1>
      {!payment && !error && <p aria-busy="true">Checking your payment of {formatMoney(pending.amount, pending.currency)} with Paystack…</p>}
      {payment && (
        <p>
          Payment of {formatMoney(payment.amount, payment.currency)}: <Status status={payment.status} />
          {payment.status === "PAYMENT_STATUS_PENDING" && <> — still waiting for Paystack; it will show on the goal once it completes.</>}
        </p>
      )}
      <ErrorText error={error} />
      <a href={href("goals", pending.goal_id)}>Back to the goal</a>
    </section>
  );
}

const PAGE_SIZE = 20;
const CONTRIBUTION_STATUSES: ContributionStatus[] = [
  "CONTRIBUTION_STATUS_PENDING",
  "CONTRIBUTION_STATUS_SUCCEEDED",
  "CONTRIBUTION_STATUS_FAILED",
  "CONTRIBUTION_STATUS_REFUNDED",
];

/** The signed-in person's contributions across every goal, from the API (any browser shows the same). */
export function MyContributionsPage({ route }: { route: Route }) {
  const user = useUser();
  const status = (route.query.get("status") ?? "") as ContributionStatus | "";
  const { token, reset, pager } = usePages();
  const { value, error } = useLoad(async () => {
    if (!user) return null;
    return call(
      api.GET("/v1/users/me/contributions", {
        params: { query: { page_size: PAGE_SIZE, page_token: token || undefined, status: status || undefined } },
      }),
    );
  }, [user?.id, status, token]);
  if (!user) return <LoginFirst what="see your contributions" />;
  const choose = (next: string) => {
    reset();
    navigate(next ? `${href("contributions")}?status=${next}` : href("contributions"));
  };
  const rows: MyContribution[] = value?.contributions ?? [];
  return (
    <section>
      <h1>My contributions</h1>
      <StatusFilter
        id="contribution-status-filter"
        all="All contributions"
        statuses={CONTRIBUTION_STATUSES}
        value={status}
        onChoose={choose}
      />
      <ErrorText error={error} />
      {value && rows.length === 0 && (
        <p>
          {status ? "No contributions in this status." : "No contributions yet."} <a href={href()}>Find a goal</a>.
        </p>
      )}
      {rows.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Goal</th>
              <th scope="col">When</th>
              <th scope="col">Amount</th>
              <th scope="col">Status</th>
            </tr>
          </thead>
          <tbody>
            {rows.map(({ contribution: c, goal_title, goal_status }) => (
              <tr data-contribution={c?.id}>
                <td>
                  <a href={href("goals", c?.goal_id ?? "")}>{goal_title}</a> <Status status={goal_status} />
                </td>
                <td>{formatTime(c?.created_at)}</td>
                <td>{formatMoney(c?.amount, c?.currency)}</td>
                <td>
                  <Status status={c?.status} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {pager(value?.next_page_token)}
    </section>
  );
}
