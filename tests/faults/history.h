/*
 * history.h: what the fault harness records while it runs the whole system
 * under faults, and what its checker reads afterwards (tests/faults/).  The
 * model is Jepsen's: every client operation is written when it is invoked
 * and again when its outcome is known, as ok, fail or info (the outcome is
 * unknown: the connection was lost mid-operation).  An info is not an
 * error; it is a question the checker answers by reading the database
 * back.
 *
 * All files are JSON Lines (one object per line), appended by many
 * processes at once: each line is written with one write() on a file
 * opened O_APPEND and is shorter than PIPE_BUF, so lines never interleave.
 * Times: "mono" is CLOCK_MONOTONIC seconds (same host, comparable across
 * processes), "wall" is CLOCK_REALTIME seconds (comparable with the
 * database's clock_timestamp() on the same host).  Every time the checker
 * compares is a wall time (or a database time) in seconds, as a JSON
 * number.  Tokens are JSON strings (claimer.new_token() is text).  Item
 * ids, tokens and names never contain NUL.  Fields the checker does not
 * know are ignored; a JSON null is the same as an absent field.
 *
 * history.jsonl, one line per event of a client operation:
 *
 *   {"p":"producer-2","op":"enqueue","id":17,"type":"invoke",
 *    "items":["f-1","f-2"],"mono":12.5,"wall":1796190000.1}
 *   {"p":"producer-2","op":"enqueue","id":17,"type":"ok","mono":12.6,...}
 *
 *   p      the process (kind-N; a restarted process keeps its name)
 *   op     enqueue (items), claim (items: those granted, on ok; token per
 *          item in "tokens", the same length), complete / fail (item,
 *          token), deliver (sub, item, token: the call of the sink, with
 *          the delivery's "key" when the sender knows it), sent (sub, item,
 *          token: marking the delivery sent)
 *   id     the operation's number within p: invoke and outcome share it.
 *          An outcome belongs to the latest invoke of (p, id); a restarted
 *          process may count from 1 again: an invoke that reuses the (p,
 *          id) of an operation still waiting for its outcome leaves that
 *          one without one (its process was killed)
 *   type   invoke | ok | fail | info
 *   error  on fail and info, the reason as text
 *   worker on claim (optional): the worker_id the claim is made under, as
 *          grants.jsonl names it, when it is not p
 *   wall   on the invoke of a claim: needed to settle a claim info
 *
 * An invoke with no outcome at all (its process was killed first) is
 * "open": the checker settles it as it settles an info.  The fields of an
 * operation are those of its invoke; an outcome may add the ones the invoke
 * did not know (a claim's items and tokens).
 *
 * grants.jsonl is not written by clients: the harness dumps it from the
 * database after the drain (a test-only trigger on claimer.claims records
 * every grant and every lease extension in faults.grants):
 *
 *   {"item":"f-1","token":"…","worker":"work-3","granted":…,"until":…}
 *   {"item":"f-1","token":"…","ended":…,"how":"fail"}
 *
 *   granted  the wall time the lease began (clock_timestamp()), until the
 *            lease end it was last extended to (a heartbeat adds a line
 *            with the same token and a later "until")
 *   ended    (optional, one per token: the trigger's AFTER DELETE) the
 *            time the claim row was deleted, and "how": complete, fail,
 *            reap or release (complete: a result with the token exists;
 *            fail: items.last_token is the token; reap: the last_error the
 *            reaper writes; release otherwise).  A lease is live from
 *            "granted" to the earlier of its latest "until" and "ended".
 *            Without the end line a lease is taken as live to its "until",
 *            and a fail info is settled from items.jsonl's last_token
 *            alone, which can decide it only for the item's last lease.
 *
 * runs.jsonl, written by the handlers (the exec handler's script and the
 * in-process handler) around their side effect:
 *
 *   {"item":"f-1","token":"…","attempt":2,"start":…,"end":…,"key":"f-1"}
 *
 *   start/end  wall times of the handler's work; a killed handler has no
 *              end.  Runs do not name their process, so the checker cannot
 *              match a run to the kill9 that ended it: it takes a run
 *              without an end as lasting until its lease stopped being
 *              live (the conservative choice: the longest it can have run
 *              with a live lease)
 *
 * effects.jsonl, one line per effect a sink applied (the idempotent sinks
 * of the handlers and of the subscribers' senders):
 *
 *   {"sink":"work","key":"f-1"}           a handler's effect
 *   {"sink":"mail","key":"clm_…"}         a subscriber's effect
 *
 *   The handlers' sink is named "work" and its key is the item_id (the
 *   handler's idempotency key), so every done item expects ("work",
 *   item_id); every sent delivery expects (its subscriber's sink, the
 *   delivery's key).
 *
 * faults.jsonl, one line per fault the schedule injected:
 *
 *   {"kind":"kill9","target":"work-3","wall":…,"ended":…,"recovered":…}
 *
 *   kind   kill9 | stop_cont | cut | cut_after_commit | blackhole |
 *          latency | terminate_backend | pg_restart | held_xmin |
 *          idle_in_tx | retry_storm (the checker counts any kind)
 *   wall, ended  when the fault began and (optional) when it ended: a
 *              SIGCONT, a blackhole's release, a restart's start; the
 *              recovery time is counted from the end (from wall without)
 *   recovered  the wall time the system was next seen making progress
 *              (a result committed after the fault ended); absent when it
 *              never was
 *
 * The final state, dumped by the harness after the drain, so that the
 * checker reads files only (and its unit tests need no database):
 *
 *   items.jsonl       {"item":"f-1","state":"done","attempts":2,
 *                      "poison":false,"last_token":null}
 *                     (poison: the harness made its handler always fail,
 *                      so it must end dead; last_token: items.last_token,
 *                      optional, settles fail infos)
 *   results.jsonl     {"item":"f-1","token":"…","attempt":2,
 *                      "committed":…}   (committed: the wall time of the
 *                                        result's commit, from
 *                                        pg_xact_commit_timestamp or
 *                                        finished_at)
 *   deliveries.jsonl  {"sub":"mail","item":"f-1","state":"sent",
 *                      "key":"clm_…","attempts":1,"token":"…"}
 *                     (token optional: the delivery's last token)
 *   subscribers.jsonl {"sub":"mail","sink":"mail"}   (each must get every
 *                      result; sink, the name its effects carry in
 *                      effects.jsonl, defaults to sub)
 *
 * Which files must be there: history, items, results and grants (a missing
 * one is bad input); runs, effects, faults, deliveries and subscribers may
 * be absent (read as empty).  A line that is not a JSON object, or lacks a
 * field the checker needs, is bad input named by file:line, with one
 * exception: the files written while faults are injected (history, runs,
 * effects, faults) may end in one torn line (no newline, not JSON: its
 * writer was killed mid-write), which is counted as a torn line and
 * skipped.  The dumps are written after the drain: a torn line there is
 * bad input.
 */
#ifndef CLAIMER_FAULTS_HISTORY_H
#define CLAIMER_FAULTS_HISTORY_H

#endif
