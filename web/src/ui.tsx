import type { ComponentChildren, InputHTMLAttributes } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { describe } from "./api/errors";
import type { GoalStatus } from "./api/types";

/** An error in words, announced to screen readers as it appears. */
export function ErrorText({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {describe(error)}
    </p>
  );
}

export function Notice({ children }: { children: ComponentChildren }) {
  return (
    <p class="notice" role="status">
      {children}
    </p>
  );
}

type FieldProps = { id: string; label: string; hint?: string } & InputHTMLAttributes<HTMLInputElement>;

/** A labelled input (the label names it for assistive technology, the hint describes it). */
export function Field({ id, label, hint, ...input }: FieldProps) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input id={id} name={id} aria-describedby={hint ? `${id}-hint` : undefined} {...input} />
      {hint && (
        <small id={`${id}-hint`} class="hint">
          {hint}
        </small>
      )}
    </div>
  );
}

/** Run a submit handler: busy while it runs, its failure kept for <ErrorText>. */
export function useAction<A extends unknown[]>(action: (...args: A) => Promise<void>) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = useCallback(
    async (...args: A) => {
      setBusy(true);
      setError(null);
      try {
        await action(...args);
      } catch (failure) {
        setError(failure);
      } finally {
        setBusy(false);
      }
    },
    [action],
  );
  return { run, busy, error, setError };
}

/** Load something when `key` changes; `reload` fetches it again. */
export function useLoad<T>(load: () => Promise<T>, key: unknown[]) {
  const [value, setValue] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [version, setVersion] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    let live = true;
    setError(null);
    loadRef.current().then(
      (found) => live && setValue(found),
      (failure) => live && setError(failure),
    );
    return () => {
      live = false;
    };
  }, [...key, version]);
  return { value, error, setValue, reload: () => setVersion((v) => v + 1) };
}

const STATUS_WORDS: Record<string, string> = {
  GOAL_STATUS_OPEN: "Open",
  GOAL_STATUS_FUNDED: "Funded",
  GOAL_STATUS_RELEASED: "Released",
  GOAL_STATUS_WITHDRAWN: "Paid out",
  GOAL_STATUS_EXPIRED: "Expired",
  GOAL_STATUS_CANCELLED: "Cancelled",
  GOAL_STATUS_REFUNDING: "Refunding",
  GOAL_STATUS_REFUNDED: "Refunded",
  CONTRIBUTION_STATUS_PENDING: "Pending",
  CONTRIBUTION_STATUS_SUCCEEDED: "Paid",
  CONTRIBUTION_STATUS_FAILED: "Failed",
  CONTRIBUTION_STATUS_REFUNDED: "Refunded",
  PROOF_STATUS_PENDING: "Voting",
  PROOF_STATUS_APPROVED: "Approved",
  PROOF_STATUS_REJECTED: "Rejected",
  PAYMENT_STATUS_PENDING: "Pending",
  PAYMENT_STATUS_SUCCESS: "Paid",
  PAYMENT_STATUS_FAILED: "Failed",
  PAYMENT_STATUS_ABANDONED: "Abandoned",
  PAYMENT_STATUS_REFUND_PENDING: "Refund pending",
  PAYMENT_STATUS_REFUNDED: "Refunded",
};

export function statusWord(status: string | undefined): string {
  return STATUS_WORDS[status ?? ""] ?? (status ?? "").replace(/^[A-Z]+_STATUS_/, "").toLowerCase();
}

/** A status as a badge; `data-status` keeps the API's name for styling and tests. */
export function Status({ status }: { status: GoalStatus | string | undefined }) {
  const tone = (status ?? "").replace(/^[A-Z]+_STATUS_/, "").toLowerCase();
  return (
    <span class={`badge badge-${tone}`} data-status={status}>
      {statusWord(status)}
    </span>
  );
}

export function formatTime(value: string | undefined): string {
  if (!value) return "";
  const time = new Date(value);
  return Number.isNaN(time.getTime()) ? value : time.toLocaleString();
}

/** Paging by the API's opaque tokens. The tokens of the pages before this one are kept,
 * so "Previous" goes back without a server cursor for it. */
export function usePages() {
  const [tokens, setTokens] = useState<string[]>([""]);
  const pager = (nextToken: string | undefined) => (
    <nav class="pager" aria-label="Pages">
      <button type="button" disabled={tokens.length < 2} onClick={() => setTokens(tokens.slice(0, -1))}>
        Previous page
      </button>
      <button type="button" disabled={!nextToken} onClick={() => setTokens([...tokens, nextToken!])}>
        Next page
      </button>
    </nav>
  );
  return { token: tokens[tokens.length - 1] ?? "", reset: () => setTokens([""]), pager };
}

/** A list's status filter: "all", then each status in words. */
export function StatusFilter(props: { id: string; all: string; statuses: string[]; value: string; onChoose: (status: string) => void }) {
  return (
    <div class="toolbar">
      <label for={props.id}>Show</label>
      <select id={props.id} value={props.value} onChange={(e) => props.onChoose(e.currentTarget.value)}>
        <option value="">{props.all}</option>
        {props.statuses.map((s) => (
          <option value={s}>{statusWord(s)}</option>
        ))}
      </select>
    </div>
  );
}
