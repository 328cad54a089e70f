// What the browser keeps across the trip to Paystack's checkout and back.

export type PendingPayment = { payment_id: string; goal_id: string; amount: string; currency: string };

const pendingKey = (reference: string) => `gofund.payment.${reference}`;

/** Before leaving for checkout: the return page finds the payment by the reference
 * Paystack appends to the callback URL. sessionStorage: this tab's trip only. */
export function rememberPayment(reference: string, payment: PendingPayment): void {
  sessionStorage.setItem(pendingKey(reference), JSON.stringify(payment));
}

export function pendingPayment(reference: string): PendingPayment | null {
  const raw = sessionStorage.getItem(pendingKey(reference));
  return raw ? (JSON.parse(raw) as PendingPayment) : null;
}

export function forgetPayment(reference: string): void {
  sessionStorage.removeItem(pendingKey(reference));
}

/** A one-time message for the next page (e.g. "payment confirmed" on the goal page). */
export function flash(message?: string): string | null {
  if (message !== undefined) {
    sessionStorage.setItem("gofund.flash", message);
    return message;
  }
  const found = sessionStorage.getItem("gofund.flash");
  sessionStorage.removeItem("gofund.flash");
  return found;
}
