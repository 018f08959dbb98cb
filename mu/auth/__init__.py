"""Message authentication for received mail: SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489)."""
