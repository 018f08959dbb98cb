"""mu: a self-hosted messaging and mail server.

Layers, bottom to top (each imports only from the layers below it):

    config, safeio, addr, log          settings, durable file writes, address syntax
    store                              journaled JSON store + blob packs (mail.json)
    accounts, mailbox, blocklist,      the domain: users, messages, blocklist,
    ratelimit, credits, dnsresolver    rate limits, DNS
    auth/ (spf, dkim, dmarc)           message authentication
    delivery/ (mx, client, queue, dsn) outbound mail
    smtp/ (replies, parse, session,    the SMTP receiver: protocol state machine
           server, intake)             and the policy it asks
    web/                               Bottle app: pages and JSON API
    cli, app                           command line and process wiring

`web` and `smtp` never import each other.
"""

__version__ = "0.1.0"
