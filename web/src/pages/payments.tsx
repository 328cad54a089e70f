import { useEffect, useState } from "preact/hooks";
import { api, call } from "../api/client";
import type { Contribution, Goal, Payment } from "../api/types";
import { formatMoney } from "../money";
import { contributedGoals, flash, forgetPayment, pendingPayment } from "../payments-memory";
import { href, navigate, type Route } from "../router";
import { useUser } from "../session";
import { ErrorText, Status, formatTime, useLoad } from "../ui";
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
        <p>This browser has no record of payment {reference || "(no reference)"}. Your contributions show on each goal's page.</p>
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

type Row = { goal: Goal; contributions: Contribution[] };

export function MyContributionsPage() {
  const user = useUser();
  const { value, error } = useLoad(async (): Promise<Row[]> => {
    if (!user) return [];
    return Promise.all(
      contributedGoals(user.id).map(async (goalId) => {
        const [goal, list] = await Promise.all([
          call(api.GET("/v1/goals/{goal_id}", { params: { path: { goal_id: goalId } } })),
          call(api.GET("/v1/goals/{goal_id}/contributions", { params: { path: { goal_id: goalId }, query: { page_size: 100 } } })),
        ]);
        return { goal: goal.goal!, contributions: (list.contributions ?? []).filter((c) => c.user_id === user.id) };
      }),
    );
  }, [user?.id]);
  if (!user) return <LoginFirst what="see your contributions" />;
  return (
    <section>
      <h1>My contributions</h1>
      <ErrorText error={error} />
      {value && value.length === 0 && (
        <p>
          No contributions from this browser yet. <a href={href()}>Find a goal</a>.
        </p>
      )}
      {value && value.length > 0 && (
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
            {value.flatMap(({ goal, contributions }) =>
              contributions.map((c) => (
                <tr data-contribution={c.id}>
                  <td>
                    <a href={href("goals", goal.id!)}>{goal.title}</a> <Status status={goal.status} />
                  </td>
                  <td>{formatTime(c.created_at)}</td>
                  <td>{formatMoney(c.amount, c.currency)}</td>
                  <td>
                    <Status status={c.status} />
                  </td>
                </tr>
              )),
            )}
          </tbody>
        </table>
      )}
    </section>
  );
}
