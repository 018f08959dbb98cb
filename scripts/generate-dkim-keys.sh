#!/bin/sh
# Generate the DKIM key pair mu signs outbound mail with, and print the DNS record to publish.
#   usage: ./scripts/generate-dkim-keys.sh DOMAIN [SELECTOR]
# Writes $MU_HOME/keys/dkim.key (0600) and dkim.pub; MU_HOME defaults to ~/.mu.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ -z "$1" ]; then
  echo "usage: $0 DOMAIN [SELECTOR]" >&2
  exit 2
fi
domain=$1
selector=${2:-${MAIL_SELECTOR:-default}}
case "$domain$selector" in
  *[!A-Za-z0-9.-]*) echo "$0: invalid domain or selector" >&2; exit 2 ;;
esac
command -v openssl >/dev/null 2>&1 || { echo "$0: openssl is required" >&2; exit 1; }

home=${MU_HOME:-$HOME/.mu}
keys=$home/keys
umask 077
mkdir -p "$keys"
chmod 700 "$home" "$keys"

if [ -e "$keys/dkim.key" ]; then
  echo "$0: $keys/dkim.key already exists; move it away first to make a new key" >&2
  exit 1
fi
tmp=$keys/.dkim.key.tmp.$$
openssl genrsa -out "$tmp" 2048 2>/dev/null
chmod 600 "$tmp"
openssl rsa -in "$tmp" -pubout -out "$keys/dkim.pub" 2>/dev/null
chmod 600 "$keys/dkim.pub"
mv "$tmp" "$keys/dkim.key"

pub=$(grep -v -- "-----" "$keys/dkim.pub" | tr -d '\n')
echo "DKIM key written to $keys/dkim.key (public key: $keys/dkim.pub)"
echo
echo "Publish this DNS TXT record:"
echo
echo "$selector._domainkey.$domain. IN TXT \"v=DKIM1; k=rsa; p=$pub\""
echo
echo "Then run mu with MAIL_DOMAIN=$domain MAIL_SELECTOR=$selector"
