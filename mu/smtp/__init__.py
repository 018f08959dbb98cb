"""The SMTP receiver: `replies` (every reply mu sends), `parse` (command syntax),
`session` (the protocol state machine), `server` (sockets, timeouts, threads),
`policy` (who may send what to whom: recipients, blocklist, rate limits, storage)."""
