import { useEffect, useState } from "preact/hooks";
import { api, call } from "../api/client";
import type { Goal, GoalProgress, Proof } from "../api/types";
import { formatMoney, parseMoney } from "../money";
import { flash, rememberPayment } from "../payments-memory";
import { href, type Route } from "../router";
import { useUser } from "../session";
import { watchGoal } from "../stream";
import { ErrorText, Field, Notice, Status, formatTime, useAction, useLoad } from "../ui";
import { LoginFirst } from "./auth";
import { ProgressBar } from "./goals";

// How often a page reads again what no stream pushes (a proof's tally, a settling contribution).
const PROOF_POLL_MS = 3000;
const CANCELLABLE = new Set(["GOAL_STATUS_OPEN", "GOAL_STATUS_FUNDED"]);

export function GoalPage({ goalId }: { goalId: string; route: Route }) {
  const user = useUser();
  const loaded = useLoad(() => call(api.GET("/v1/goals/{goal_id}", { params: { path: { goal_id: goalId } } })), [goalId]);
  const [progress, setProgress] = useState<GoalProgress | null>(null);
  const [live, setLive] = useState(false);
  const [message] = useState(() => flash());
  const [changes, setChanges] = useState(0);

  useEffect(() => {
    setProgress(null);
    return watchGoal(goalId, setProgress, setLive);
  }, [goalId]);

  const proofs = useLoad(() => call(api.GET("/v1/goals/{goal_id}/proofs", { params: { path: { goal_id: goalId } } })), [goalId, changes]);
  const goal = loaded.value?.goal;
  // A new status from the stream (funded, released, paid out…) changes what can be
  // done here, so the goal, its proofs and contributions are read again.
  useEffect(() => {
    if (goal && progress?.status && progress.status !== goal.status) {
      loaded.reload();
      setChanges((c) => c + 1);
    }
  }, [progress?.status]);

  // Money moved: contributions' statuses may have changed with it.
  useEffect(() => {
    if (goal && progress) setChanges((c) => c + 1);
  }, [progress?.raised_amount]);

  if (loaded.error) return <ErrorText error={loaded.error} />;
  if (!goal) return <p aria-busy="true">Loading…</p>;
  const shown: Goal = progress
    ? { ...goal, status: progress.status ?? goal.status, raised_amount: progress.raised_amount, contributor_count: progress.contributor_count }
    : goal;
  const owner = !!user && user.id === goal.owner_id;
  const voting = !!proofs.value?.proofs?.some((p) => p.status === "PROOF_STATUS_PENDING");
  const refresh = () => {
    loaded.reload();
    setChanges((c) => c + 1);
  };

  return (
    <article class="goal">
      {message && <Notice>{message}</Notice>}
      <header>
        <h1>{goal.title}</h1>
        <Status status={shown.status} />
      </header>
      <ProgressPanel goal={shown} live={live} />
      <p class="description">{goal.description}</p>
      <p class="meta">
        Deadline {formatTime(goal.deadline)} · started {formatTime(goal.created_at)}
        {goal.cancel_reason && <> · cancelled: {goal.cancel_reason}</>}
      </p>
      {shown.status === "GOAL_STATUS_OPEN" &&
        (user ? <ContributeForm goal={goal} /> : <LoginFirst what="contribute" />)}
      {user && <Contributions goal={goal} owner={owner} version={changes} />}
      {owner && <OwnerPanel goal={shown} voting={voting} onChange={refresh} />}
      <Proofs goal={shown} found={proofs} canVote={!!user && !owner} />
    </article>
  );
}

function ProgressPanel({ goal, live }: { goal: Goal; live: boolean }) {
  const count = goal.contributor_count ?? 0;
  const paidOut = goal.status === "GOAL_STATUS_WITHDRAWN";
  return (
    <section class="panel" aria-labelledby="progress-heading">
      <h2 id="progress-heading" class="visually-hidden">
        Progress
      </h2>
      <ProgressBar goal={goal} label="Funded" />
      <p aria-live="polite" aria-atomic="true" data-testid="progress">
        <strong data-testid="raised">{formatMoney(goal.raised_amount, goal.currency)}</strong> raised of{" "}
        {formatMoney(goal.target_amount, goal.currency)} · <span data-testid="contributors">{count}</span>{" "}
        {count === 1 ? "contributor" : "contributors"}
        {paidOut && <> · the money has been paid out to the owner</>}
        {goal.status === "GOAL_STATUS_RELEASED" && <> · released to the owner, payout on its way</>}
      </p>
      <p class="live">
        <span class={live ? "dot on" : "dot"} aria-hidden="true" /> {live ? "Live" : "Reconnecting…"}
      </p>
    </section>
  );
}

function ContributeForm({ goal }: { goal: Goal }) {
  const [amount, setAmount] = useState("");
  // One key per attempt, so a double click or a retry makes one payment.
  const [key, setKey] = useState(() => crypto.randomUUID());
  const { run, busy, error } = useAction(async () => {
    const minor = parseMoney(amount);
    if (!minor) throw new Error("Enter an amount above zero, e.g. 5000 or 5000.00.");
    const reply = await call(
      api.POST("/v1/goals/{goal_id}/contributions", {
        params: { path: { goal_id: goal.id! } },
        body: { amount: minor, currency: goal.currency!, idempotency_key: key },
      }),
    );
    setKey(crypto.randomUUID());
    rememberPayment(reply.payment_reference!, {
      payment_id: reply.contribution!.payment_id,
      goal_id: goal.id!,
      amount: minor,
      currency: goal.currency!,
    });
    location.assign(reply.authorization_url!);
  });
  return (
    <section class="panel" aria-labelledby="contribute-heading">
      <h2 id="contribute-heading">Contribute</h2>
      <form class="inline" onSubmit={(e) => (e.preventDefault(), void run())}>
        <Field id="amount" label={`Amount (${goal.currency})`} inputMode="decimal" required value={amount} onInput={(e) => setAmount(e.currentTarget.value)} />
        <button type="submit" disabled={busy}>
          {busy ? "Opening checkout…" : "Contribute"}
        </button>
      </form>
      <small class="hint">You pay on Paystack's checkout page and come back here.</small>
      <ErrorText error={error} />
    </section>
  );
}

function Contributions({ goal, owner, version }: { goal: Goal; owner: boolean; version: number }) {
  const { value, error, reload } = useLoad(
    () => call(api.GET("/v1/goals/{goal_id}/contributions", { params: { path: { goal_id: goal.id! }, query: { page_size: 100 } } })),
    [goal.id, version],
  );
  const rows = value?.contributions ?? [];
  // A payment still settling (or failing, which moves no money) shows its outcome when it has one.
  const settling = rows.some((c) => c.status === "CONTRIBUTION_STATUS_PENDING");
  useEffect(() => {
    if (!settling) return;
    const timer = window.setInterval(reload, PROOF_POLL_MS);
    return () => window.clearInterval(timer);
  }, [settling]);
  if (!error && rows.length === 0) return null;
  return (
    <section class="panel" aria-labelledby="contributions-heading">
      <h2 id="contributions-heading">{owner ? "Contributions" : "Your contributions"}</h2>
      <ErrorText error={error} />
      <table>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Amount</th>
            <th scope="col">Status</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((c) => (
            <tr data-contribution={c.id}>
              <td>{formatTime(c.created_at)}</td>
              <td>{formatMoney(c.amount, c.currency)}</td>
              <td>
                <Status status={c.status} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function OwnerPanel({ goal, voting, onChange }: { goal: Goal; voting: boolean; onChange: () => void }) {
  return (
    <section class="panel" aria-labelledby="owner-heading">
      <h2 id="owner-heading">Your goal</h2>
      <p>
        Payouts go to your <a href={`${href("payout")}?currency=${goal.currency}`}>payout account</a>; add one before the
        money is released.
      </p>
      {goal.status === "GOAL_STATUS_OPEN" && <EditGoalForm goal={goal} onChange={onChange} />}
      {goal.status === "GOAL_STATUS_FUNDED" && !voting && <ProofForm goal={goal} onChange={onChange} />}
      {voting && <p>Your proof is being voted on.</p>}
      {CANCELLABLE.has(goal.status ?? "") && <CancelGoalForm goal={goal} onChange={onChange} />}
    </section>
  );
}

function EditGoalForm({ goal, onChange }: { goal: Goal; onChange: () => void }) {
  const [open, setOpen] = useState(false);
  const [title, setTitle] = useState(goal.title ?? "");
  const [description, setDescription] = useState(goal.description ?? "");
  const { run, busy, error } = useAction(async () => {
    await call(api.PATCH("/v1/goals/{goal_id}", { params: { path: { goal_id: goal.id! } }, body: { title, description } }));
    setOpen(false);
    onChange();
  });
  if (!open)
    return (
      <button type="button" onClick={() => setOpen(true)}>
        Edit title and description
      </button>
    );
  return (
    <form onSubmit={(e) => (e.preventDefault(), void run())}>
      <h3>Edit</h3>
      <Field id="edit-title" label="Title" required value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
      <div class="field">
        <label for="edit-description">Description</label>
        <textarea id="edit-description" rows={4} value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      </div>
      <ErrorText error={error} />
      <button type="submit" disabled={busy}>
        Save
      </button>{" "}
      <button type="button" class="secondary" onClick={() => setOpen(false)}>
        Discard
      </button>
    </form>
  );
}

function CancelGoalForm({ goal, onChange }: { goal: Goal; onChange: () => void }) {
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState("");
  const { run, busy, error } = useAction(async () => {
    await call(api.POST("/v1/goals/{goal_id}:cancel", { params: { path: { goal_id: goal.id! } }, body: { reason } }));
    setOpen(false);
    onChange();
  });
  if (!open)
    return (
      <button type="button" class="danger" onClick={() => setOpen(true)}>
        Cancel this goal…
      </button>
    );
  return (
    <form onSubmit={(e) => (e.preventDefault(), void run())}>
      <h3>Cancel the goal</h3>
      <p>Every contribution is refunded. This cannot be undone.</p>
      <Field id="cancel-reason" label="Why (shown on the goal)" required value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
      <ErrorText error={error} />
      <button type="submit" class="danger" disabled={busy}>
        Cancel goal and refund
      </button>{" "}
      <button type="button" class="secondary" onClick={() => setOpen(false)}>
        Keep it
      </button>
    </form>
  );
}

function ProofForm({ goal, onChange }: { goal: Goal; onChange: () => void }) {
  const [title, setTitle] = useState("");
  const [description, setDescription] = useState("");
  const [media, setMedia] = useState("");
  const [requestId] = useState(() => crypto.randomUUID());
  const { run, busy, error } = useAction(async () => {
    const media_urls = media.split(/\s+/).filter(Boolean);
    await call(
      api.POST("/v1/goals/{goal_id}/proofs", {
        params: { path: { goal_id: goal.id! } },
        body: { title, description, media_urls, request_id: requestId },
      }),
    );
    onChange();
  });
  return (
    <form onSubmit={(e) => (e.preventDefault(), void run())}>
      <h3>Submit proof</h3>
      <p>Show contributors what was done; they vote to release the money to you.</p>
      <Field id="proof-title" label="Proof title" required value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
      <div class="field">
        <label for="proof-description">What was done</label>
        <textarea id="proof-description" rows={4} value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      </div>
      <div class="field">
        <label for="proof-media">Media links</label>
        <textarea id="proof-media" rows={3} aria-describedby="proof-media-hint" value={media} onInput={(e) => setMedia(e.currentTarget.value)} />
        <small id="proof-media-hint" class="hint">
          One https:// link per line (photos, videos, receipts).
        </small>
      </div>
      <ErrorText error={error} />
      <button type="submit" disabled={busy}>
        Submit proof
      </button>
    </form>
  );
}

type ProofsLoad = { value: { proofs?: Proof[] } | null; error: unknown; reload: () => void };

function Proofs({ goal, found, canVote }: { goal: Goal; found: ProofsLoad; canVote: boolean }) {
  const { value, error, reload } = found;
  const proofs = value?.proofs ?? [];
  // While the goal is funded its owner may submit a proof at any moment: look for it.
  const waiting = goal.status === "GOAL_STATUS_FUNDED" && !proofs.some((p) => p.status === "PROOF_STATUS_PENDING");
  useEffect(() => {
    if (!waiting) return;
    const timer = window.setInterval(reload, PROOF_POLL_MS);
    return () => window.clearInterval(timer);
  }, [waiting]);
  if (!error && proofs.length === 0) return null;
  return (
    <section class="panel" aria-labelledby="proofs-heading">
      <h2 id="proofs-heading">Proof</h2>
      <ErrorText error={error} />
      <ol class="proofs">
        {proofs.map((proof) => (
          <ProofItem proof={proof} currency={goal.currency ?? ""} canVote={canVote} onDecided={reload} />
        ))}
      </ol>
    </section>
  );
}

function ProofItem({ proof: initial, currency, canVote, onDecided }: { proof: Proof; currency: string; canVote: boolean; onDecided: () => void }) {
  const [proof, setProof] = useState(initial);
  const [voted, setVoted] = useState(false);
  const pending = proof.status === "PROOF_STATUS_PENDING";
  useEffect(() => setProof(initial), [initial]);
  // The tally moves as others vote: read it again while voting is open.
  useEffect(() => {
    if (!pending) return;
    const timer = window.setInterval(async () => {
      try {
        const reply = await call(api.GET("/v1/proofs/{proof_id}", { params: { path: { proof_id: proof.id! } } }));
        setProof(reply.proof!);
        if (reply.proof?.status !== "PROOF_STATUS_PENDING") onDecided();
      } catch {
        // The next tick tries again.
      }
    }, PROOF_POLL_MS);
    return () => window.clearInterval(timer);
  }, [proof.id, pending]);
  const [comment, setComment] = useState("");
  const { run, busy, error } = useAction(async (approve: boolean) => {
    const reply = await call(
      api.POST("/v1/proofs/{proof_id}/votes", { params: { path: { proof_id: proof.id! } }, body: { is_approved: approve, comment } }),
    );
    setVoted(true);
    if (reply.proof) setProof(reply.proof);
    if (reply.proof?.status !== "PROOF_STATUS_PENDING") onDecided();
  });
  return (
    <li class="proof" data-proof={proof.id}>
      <h3>
        {proof.title} <Status status={proof.status} />
      </h3>
      <p>{proof.description}</p>
      {proof.media_urls && proof.media_urls.length > 0 && (
        <ul class="media">
          {proof.media_urls.map((url) => (
            <li>
              <a href={url} target="_blank" rel="noopener noreferrer">
                {url}
              </a>
            </li>
          ))}
        </ul>
      )}
      <p aria-live="polite" data-testid="tally">
        Approve {formatMoney(proof.approve_weight, currency)} · Reject {formatMoney(proof.reject_weight, currency)} · {proof.voter_count ?? 0}{" "}
        {proof.voter_count === 1 ? "vote" : "votes"}
        {pending && <> · voting ends {formatTime(proof.voting_ends_at)}</>}
      </p>
      {pending && canVote && !voted && (
        <form onSubmit={(e) => e.preventDefault()}>
          <Field id={`comment-${proof.id}`} label="Comment (optional)" value={comment} onInput={(e) => setComment(e.currentTarget.value)} />
          <button type="button" disabled={busy} onClick={() => void run(true)}>
            Approve
          </button>{" "}
          <button type="button" class="secondary" disabled={busy} onClick={() => void run(false)}>
            Reject
          </button>
        </form>
      )}
      {voted && <Notice>Thank you, your vote is counted.</Notice>}
      <ErrorText error={error} />
    </li>
  );
}
