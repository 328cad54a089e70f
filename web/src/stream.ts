import type { GoalProgress } from "./api/types";

type Message = GoalProgress & { heartbeat?: boolean };

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 15_000;
const FINAL = new Set(["GOAL_STATUS_WITHDRAWN", "GOAL_STATUS_REFUNDED"]);

/** Follow a goal's progress (GET /v1/goals/{id}:watch) until the returned function is
 * called. Server-sent events through EventSource; when the stream drops, it is opened
 * again from the last `seq` seen (after_seq), so no change is missed or shown twice.
 * An edge that does not speak SSE gets the same stream as NDJSON over fetch. */
export function watchGoal(
  goalId: string,
  onProgress: (progress: GoalProgress) => void,
  onState: (live: boolean) => void,
): () => void {
  let lastSeq: string | null = null;
  let stopped = false;
  let retryMs = RETRY_MIN_MS;
  let timer: number | undefined;
  let close: () => void = () => {};
  let sse = typeof EventSource !== "undefined";

  const url = () => {
    const params = new URLSearchParams();
    if (lastSeq !== null) params.set("after_seq", lastSeq);
    const query = params.toString();
    return `/v1/goals/${encodeURIComponent(goalId)}:watch${query ? `?${query}` : ""}`;
  };

  const receive = (text: string): void => {
    if (!text.trim()) return;
    let message: Message;
    try {
      message = JSON.parse(text) as Message;
    } catch {
      return;
    }
    // Some framings wrap each message as {"result": {...}}.
    const body = ((message as { result?: Message }).result ?? message) as Message;
    retryMs = RETRY_MIN_MS;
    onState(true);
    if (body.heartbeat) return;
    if (body.seq !== undefined && lastSeq !== null && BigInt(body.seq) <= BigInt(lastSeq)) return;
    if (body.seq !== undefined) lastSeq = String(body.seq);
    onProgress(body);
    // The server ends the stream after a final status; nothing more will change.
    if (body.status && FINAL.has(body.status)) {
      stopped = true;
      close();
    }
  };

  const retry = (): void => {
    close();
    if (stopped) return;
    onState(false);
    timer = window.setTimeout(connect, retryMs);
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
  };

  const connectSse = (): void => {
    const source = new EventSource(url());
    let heard = false;
    source.onmessage = (event) => {
      heard = true;
      receive(event.data);
    };
    // EventSource would reconnect by itself, but without our after_seq; and it
    // gives up for good on a non-SSE answer, which is when NDJSON is tried instead.
    source.onerror = () => {
      if (!heard && source.readyState === EventSource.CLOSED) sse = false;
      retry();
    };
    close = () => source.close();
  };

  const connectNdjson = (): void => {
    const abort = new AbortController();
    close = () => abort.abort();
    void (async () => {
      try {
        const response = await fetch(url(), { headers: { Accept: "application/x-ndjson" }, signal: abort.signal });
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          const lines = buffer.split("\n");
          buffer = lines.pop() ?? "";
          lines.forEach(receive);
        }
      } catch {
        if (abort.signal.aborted) return;
      }
      retry();
    })();
  };

  const connect = (): void => (sse ? connectSse() : connectNdjson());
  connect();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
    close();
  };
}
