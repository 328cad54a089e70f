// Amounts travel as int64 strings of minor units (kobo, pesewas, cents); every
// supported currency has 100 of them. Parsed and printed as strings and BigInt,
// never floats, so no amount is ever rounded.
export const CURRENCIES = ["NGN", "GHS", "KES", "ZAR", "USD"] as const;

export function formatMoney(minor: string | number | undefined, currency = ""): string {
  const value = BigInt(minor ?? 0);
  const sign = value < 0n ? "-" : "";
  const abs = value < 0n ? -value : value;
  const whole = (abs / 100n).toLocaleString("en");
  const cents = (abs % 100n).toString().padStart(2, "0");
  return `${currency} ${sign}${whole}.${cents}`.trim();
}

/** "1,500.5" → "150050"; null when it is not an amount. */
export function parseMoney(text: string): string | null {
  const match = /^\s*(\d{1,15})(?:\.(\d{1,2}))?\s*$/.exec(text.replace(/,/g, ""));
  if (!match) return null;
  const minor = BigInt(match[1]!) * 100n + BigInt((match[2] ?? "").padEnd(2, "0") || "0");
  return minor > 0n ? minor.toString() : null;
}

/** Percent of target reached, 0..100, for a progress bar. */
export function percent(raised: string | undefined, target: string | undefined): number {
  const t = BigInt(target ?? 0);
  if (t <= 0n) return 0;
  const p = Number((BigInt(raised ?? 0) * 100n) / t);
  return Math.min(100, p);
}
