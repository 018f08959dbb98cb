#!/bin/sh
# Generate the DKIM key pair mu signs outbound mail with, and print the DNS record to publish.
#   usage: ./scripts/generate-dkim-keys.sh DOMAIN [SELECTOR]
# Writes $MU_HOME/keys/dkim.key (0600) and dkim.pub by running `mu dkim generate` with
# MAIL_DOMAIN=DOMAIN: run by root on an installed server, the files belong to the owner of
# MU_HOME (the user the server runs as), and MU_HOME comes from /etc/mu/mu.env when unset.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ -z "$1" ]; then
  echo "usage: $0 DOMAIN [SELECTOR]" >&2
  exit 2
fi
domain=$1
selector=${2:-${MAIL_SELECTOR:-default}}
case "$domain$selector" in
  *[!A-Za-z0-9._-]*) echo "$0: invalid domain or selector" >&2; exit 2 ;;
esac

here=$(dirname "$(readlink -f "$0")")
if [ -x "$here/../mu" ] && [ ! -d "$here/../mu" ]; then
  mu=$here/../mu            # installed: /opt/mu/scripts/.. is /opt/mu, the mu command
elif [ -f "$here/../mu.py" ]; then
  mu=$here/../mu.py         # a clone: mu.py runs itself in .venv
else
  echo "$0: cannot find mu next to this script" >&2
  exit 1
fi
MAIL_DOMAIN=$domain MAIL_SELECTOR=$selector exec "$mu" dkim generate --selector "$selector"
