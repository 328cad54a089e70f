// Resource types read off the generated OpenAPI paths (src/api/schema.d.ts, made by
// `npm run gen` from openapi/openapi.json), so no request or response shape is
// written by hand here and a change to a proto shows up as a type error.
import type { paths } from "./schema";

type Ok<R> = R extends { responses: { 200: { content: infer C } } } ? C[keyof C] : never;
/** The JSON a route answers with on success. */
export type Reply<P extends keyof paths, M extends keyof paths[P]> = Ok<paths[P][M]>;

export type Goal = NonNullable<Reply<"/v1/goals/{goal_id}", "get">["goal"]>;
export type GoalStatus = NonNullable<Goal["status"]>;
export type Contribution = NonNullable<Reply<"/v1/contributions/{contribution_id}", "get">["contribution"]>;
/** One of the signed-in person's contributions with its goal's title and status (GET /v1/users/me/contributions). */
export type MyContribution = NonNullable<Reply<"/v1/users/me/contributions", "get">["contributions"]>[number];
export type ContributionStatus = NonNullable<Contribution["status"]>;
export type Proof = NonNullable<Reply<"/v1/proofs/{proof_id}", "get">["proof"]>;
export type Payment = NonNullable<Reply<"/v1/payments/{payment_id}", "get">["payment"]>;
export type User = NonNullable<Reply<"/v1/users/me", "get">["user"]>;
export type Session = NonNullable<Reply<"/v1/users/me/sessions", "get">["sessions"]>[number];
export type Bank = NonNullable<Reply<"/v1/banks", "get">["banks"]>[number];
export type Recipient = NonNullable<Reply<"/v1/payout-recipients", "post">["recipient"]>;
/** One message of the goal's progress stream (GET /v1/goals/{goal_id}:watch). */
export type GoalProgress = Reply<"/v1/goals/{goal_id}:watch", "get">;
