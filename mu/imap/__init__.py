"""The IMAP server (RFC 9051 IMAP4rev2 and RFC 3501 IMAP4rev1) over the mailbox store.

    server.py     sockets, TLS, bounded reads of lines and literals, one thread per connection
    parser.py     the command grammar: tags, atoms, strings, literals, sequence sets, dates
    session.py    the state machine, one method per command
    selected.py   the selected mailbox as a session knows it, and the updates that catch it up
    fetch.py      FETCH items and their responses        search.py   SEARCH keys, ESEARCH
    sort.py       SORT and THREAD (RFC 5256, RFC 5957)   listing.py  LIST and LSUB rows
    notify.py     NOTIFY (RFC 5465) for other mailboxes  mutf7.py    modified UTF-7 names
    responses.py  every fixed response text and the capability lists

The session never touches a socket and the server never interprets a command; the store
(`app.mailstore`, mu/mailstore.py) is the only state shared between connections, apart from
the server's record of which messages some session has already seen as \\Recent.
"""
