import { useState } from "preact/hooks";
import { api, call } from "../api/client";
import type { Goal, GoalStatus } from "../api/types";
import { CURRENCIES, formatMoney, parseMoney, percent } from "../money";
import { href, navigate, type Route } from "../router";
import { useUser } from "../session";
import { ErrorText, Field, Status, StatusFilter, useAction, useLoad, usePages } from "../ui";
import { LoginFirst } from "./auth";

const PAGE_SIZE = 12;
const STATUSES: GoalStatus[] = [
  "GOAL_STATUS_OPEN",
  "GOAL_STATUS_FUNDED",
  "GOAL_STATUS_RELEASED",
  "GOAL_STATUS_WITHDRAWN",
  "GOAL_STATUS_EXPIRED",
  "GOAL_STATUS_CANCELLED",
  "GOAL_STATUS_REFUNDING",
  "GOAL_STATUS_REFUNDED",
];

export function ProgressBar({ goal, label }: { goal: Pick<Goal, "raised_amount" | "target_amount">; label: string }) {
  const value = percent(goal.raised_amount, goal.target_amount);
  return (
    <div class="progress" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={value}>
      <div class="progress-fill" style={{ width: `${value}%` }} />
    </div>
  );
}

function GoalCard({ goal }: { goal: Goal }) {
  return (
    <li class="card">
      <h2>
        <a href={href("goals", goal.id!)}>{goal.title}</a>
      </h2>
      <Status status={goal.status} />
      <ProgressBar goal={goal} label={`${goal.title}: funded`} />
      <p>
        {formatMoney(goal.raised_amount, goal.currency)} of {formatMoney(goal.target_amount, goal.currency)} ·{" "}
        {goal.contributor_count} {goal.contributor_count === 1 ? "contributor" : "contributors"}
      </p>
    </li>
  );
}

export function GoalsPage({ route }: { route: Route }) {
  const status = (route.query.get("status") ?? "") as GoalStatus | "";
  const { token, reset, pager } = usePages();
  const { value, error } = useLoad(
    () =>
      call(
        api.GET("/v1/goals", {
          params: { query: { page_size: PAGE_SIZE, page_token: token || undefined, status: status || undefined } },
        }),
      ),
    [status, token],
  );
  const choose = (next: string) => {
    reset();
    navigate(next ? `${href()}?status=${next}` : href());
  };
  return (
    <section>
      <h1>Goals</h1>
      <StatusFilter id="status-filter" all="All goals" statuses={STATUSES} value={status} onChoose={choose} />
      <ErrorText error={error} />
      {value && value.goals?.length === 0 && <p>No goals here yet.</p>}
      <ul class="cards" aria-busy={!value && !error}>
        {value?.goals?.map((goal) => <GoalCard goal={goal} />)}
      </ul>
      {pager(value?.next_page_token)}
    </section>
  );
}

function inDays(days: number): string {
  const date = new Date(Date.now() + days * 86_400_000);
  return date.toISOString().slice(0, 10);
}

export function NewGoalPage() {
  const user = useUser();
  const [form, setForm] = useState({ title: "", description: "", target: "", currency: "NGN", deadline: inDays(30) });
  const set = (key: keyof typeof form) => (e: { currentTarget: HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement }) =>
    setForm({ ...form, [key]: e.currentTarget.value });
  const [requestId] = useState(() => crypto.randomUUID());
  const { run, busy, error } = useAction(async () => {
    const target = parseMoney(form.target);
    if (!target) throw new Error("Enter the target as an amount, e.g. 50000 or 50000.00.");
    // The end of the chosen day, in the person's own time zone.
    const deadline = new Date(`${form.deadline}T23:59:59`).toISOString();
    const reply = await call(
      api.POST("/v1/goals", {
        body: { title: form.title, description: form.description, target_amount: target, currency: form.currency, deadline, request_id: requestId },
      }),
    );
    navigate(href("goals", reply.goal!.id!));
  });
  if (!user) return <LoginFirst what="start a goal" />;
  return (
    <section class="narrow">
      <h1>Start a goal</h1>
      <form onSubmit={(e) => (e.preventDefault(), void run())}>
        <Field id="title" label="Title" required minLength={3} maxLength={120} value={form.title} onInput={set("title")} />
        <div class="field">
          <label for="description">What the money is for</label>
          <textarea id="description" rows={5} value={form.description} onInput={set("description")} />
        </div>
        <div class="row">
          <Field id="target" label="Target amount" inputMode="decimal" required hint="In the currency's main unit, e.g. 50000.00." value={form.target} onInput={set("target")} />
          <div class="field">
            <label for="currency">Currency</label>
            <select id="currency" value={form.currency} onChange={set("currency")}>
              {CURRENCIES.map((c) => (
                <option value={c}>{c}</option>
              ))}
            </select>
          </div>
        </div>
        <Field id="deadline" label="Deadline" type="date" required min={inDays(1)} value={form.deadline} onInput={set("deadline")} />
        <ErrorText error={error} />
        <button type="submit" disabled={busy}>
          {busy ? "Creating…" : "Create goal"}
        </button>
      </form>
    </section>
  );
}

