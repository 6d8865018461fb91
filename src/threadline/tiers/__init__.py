"""Storage tiers: conversations archived or idle for a tenant's `coldAfterDays` move into one compressed
document each (cold) and come back on their next read or write (issue 20 item 4)."""
