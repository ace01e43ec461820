#!/bin/sh
# mail-sink.sh: an exec sink for `claimer send` that mails each delivery,
# here into a maildir-like directory standing in for a mail server:
#
#   claimer send --subscriber mail --exec 'examples/mail-sink.sh /var/tmp/outbox'
#
# stdin is the delivery, one line of JSON: subscriber, item_id, queue,
# attempt, idempotency_key, result, payload.  The message is written to
# OUTBOX/tmp/ and renamed into OUTBOX/new/KEY.eml, KEY being
# CLAIMER_IDEMPOTENCY_KEY, which is also its Message-ID.  The key is the
# same on every attempt, so a repeat (a sender killed after the mail went
# out, a replay) replaces the same file: the outbox never holds two
# messages for one delivery, as a mail server that drops a Message-ID it
# has seen never shows two.  Any failure exits non-zero: a failed attempt,
# retried on the subscriber's schedule.
#
# MAIL_FROM and MAIL_TO set the addresses (a real sender would take the
# recipient from the payload, with jq).
set -eu
outbox=${1:?usage: mail-sink.sh OUTBOX}
key=${CLAIMER_IDEMPOTENCY_KEY:?mail-sink.sh runs under claimer send --exec}
mkdir -p "$outbox/tmp" "$outbox/new"
tmp="$outbox/tmp/$key.$$"
trap 'rm -f "$tmp"' EXIT
{
  printf 'Message-ID: <%s@claimer.invalid>\n' "$key"
  printf 'Date: %s\n' "$(LC_ALL=C date '+%a, %d %b %Y %H:%M:%S %z')"
  printf 'From: %s\n' "${MAIL_FROM:-claimer@example.invalid}"
  printf 'To: %s\n' "${MAIL_TO:-ops@example.invalid}"
  printf 'Subject: result of %s\n' "$CLAIMER_ITEM_ID"
  printf 'X-Claimer-Subscriber: %s\n' "$CLAIMER_SUBSCRIBER"
  printf 'X-Claimer-Attempt: %s\n' "$CLAIMER_DELIVERY_ATTEMPT"
  printf 'Content-Type: application/json\n'
  printf '\n'
  cat
} >"$tmp"
mv -f "$tmp" "$outbox/new/$key.eml"
