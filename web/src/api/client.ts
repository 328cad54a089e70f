import createClient, { type Middleware } from "openapi-fetch";
import type { paths } from "./schema";
import { session } from "../session";

// Same origin as the API (Envoy serves both), so every URL is relative.
export const api = createClient<paths>({ baseUrl: "" });

const bearer: Middleware = {
  onRequest({ request }) {
    const token = session.token();
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
};
api.use(bearer);

type Detail = { "@type"?: string; reason?: string; metadata?: Record<string, string> };

/** An error answer from the API: google.rpc.Status with an ErrorInfo reason when there is one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

function errorOf(response: Response, body: unknown): ApiError {
  const status = body as { message?: string; details?: Detail[] } | undefined;
  const info = status?.details?.find((d) => d["@type"]?.endsWith("ErrorInfo"));
  const message = typeof body === "string" ? body : (status?.message ?? response.statusText);
  return new ApiError(response.status, info?.reason ?? "", message || `HTTP ${response.status}`);
}

/** Await an openapi-fetch call: its data, or an ApiError. A token the API no longer
 * accepts (logged out elsewhere, session revoked) signs this browser out. */
export async function call<T>(request: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  let result: { data?: T; error?: unknown; response: Response };
  try {
    result = await request;
  } catch {
    throw new ApiError(0, "NETWORK", "The server could not be reached.");
  }
  const { data, error, response } = result;
  if (error !== undefined || !response.ok) {
    const failure = errorOf(response, error);
    if (failure.status === 401 && failure.reason === "INVALID_TOKEN") session.clear();
    throw failure;
  }
  return data as T;
}
