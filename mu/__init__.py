"""mu: a self-hosted messaging and mail server.

Layers, bottom to top (each imports only from the layers below it):

    config, safeio, addr, log          settings, durable file writes, address syntax, logging
    state, store, chores               tables and indexes; snapshot + journal + blob packs;
                                       the thread that compacts and reclaims them
    outbox                             outbound records: queue entries, delivery fields, refunds
    accounts, mailbox, blocklist,      users and credits, messages, the blocklist,
    ratelimit, dnsresolver,            rate limits, DNS, message writing and reading
    compose, mime
    auth/ (spf, dkim, dmarc)           authentication of received mail
    delivery/ (mx, client, queue,      outbound mail: routing, SMTP client, the durable
               dsn, signer)            queue, bounces, DKIM signing
    smtp/ (replies, parse, session,    the SMTP receiver: reply constants, command syntax,
           server, policy)             the state machine, sockets and threads, acceptance policy
    web/                               Bottle app: pages and the JSON API
    doctor, cli, app                   DNS self-check, command line, process wiring

`web` and `smtp` never import each other.
"""

__version__ = "0.1.0"
