"""Money conventions every service shares: integers in minor units plus an ISO-4217 code."""

# The currencies GoFund takes (goals, payments, the ledger); Paystack settles each.
SUPPORTED_CURRENCIES = frozenset({"NGN", "GHS", "ZAR", "KES", "USD"})
# Minor units. The public API caps single amounts (targets, contributions) at 10^12.
MAX_PUBLIC_AMOUNT = 10**12
