"""Outbound mail: `signer` (DKIM), `mx` (where a domain's mail goes), `client` (one SMTP
conversation with a remote host), `dsn` (bounce reports), `queue` (the durable queue and
its retry schedule)."""
