"""A local stand-in for Paystack: the same paths, request fields and JSON shapes.

The payments service talks to `PAYSTACK_BASE_URL`; in development that is this
simulator (`gofund paystack-sim`), so the client written against it must work
unchanged against Paystack. Shapes and messages follow Paystack's documentation
(its API reference, doc-code samples and published error list); where Paystack
documents nothing, the choice is ours and is marked "simulator's choice" where it
is made.

Modules, inward first:

- `records`: the simulator's books (transactions, customers, refunds,
  recipients, transfers, webhook events) as plain dataclasses.
- `state`: those records in memory and on disk, a snapshot plus a journal
  with one fsynced line per change (the change and the webhook events it
  causes in the same line) so a restart loses nothing.
- `shapes`: how Paystack prints each record (API responses and webhook data).
- `domain`: Paystack's rules (validation, statuses, refunds, settlement), with
  Paystack's error messages.
- `listing`: the list routes' offset pagination (`meta`) and date window.
- `timers`: coroutines due at a wall-clock time (webhook retries, auto-settle).
- `webhooks`: signed delivery with Paystack's retry schedule, compressed, and
  the drops that lose an event on purpose.
- `checkout`: the hosted payment page behind `authorization_url`.
- `app`: the aiohttp routes; `main`: start, stop and the process entry point.
"""
