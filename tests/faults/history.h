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
 * database's clock_timestamp() on the same host).
 *
 * history.jsonl, one line per event of a client operation:
 *
 *   {"p":"producer-2","op":"enqueue","id":17,"type":"invoke",
 *    "items":["f-1","f-2"],"mono":12.5,"wall":1796190000.1}
 *   {"p":"producer-2","op":"enqueue","id":17,"type":"ok","mono":12.6,...}
 *
 *   p      the process (kind-N; a restarted process keeps its name)
 *   op     enqueue (items), claim (items: those granted, on ok; token per
 *          item in "tokens"), complete / fail (item, token), deliver (sub,
 *          item, token), sent (sub, item, token)
 *   id     the operation's number within p: invoke and outcome share it
 *   type   invoke | ok | fail | info
 *   error  on fail and info, the reason as text
 *
 * grants.jsonl is not written by clients: the harness dumps it from the
 * database after the drain (a test-only trigger on claimer.claims records
 * every grant and every lease extension in faults.grants):
 *
 *   {"item":"f-1","token":"…","worker":"work-3","granted":…,"until":…}
 *
 *   granted  the wall time the lease began (clock_timestamp()), until the
 *            lease end it was last extended to (a heartbeat adds a line
 *            with the same token and a later "until")
 *
 * runs.jsonl, written by the handlers (the exec handler's script and the
 * in-process handler) around their side effect:
 *
 *   {"item":"f-1","token":"…","attempt":2,"start":…,"end":…,"key":"f-1"}
 *
 *   start/end  wall times of the handler's work; a killed handler has no
 *              end (it ran until it was killed: the checker takes the
 *              kill's time from faults.jsonl, or the end of the run)
 *
 * effects.jsonl, one line per effect a sink applied (the idempotent sinks
 * of the handlers and of the subscribers' senders):
 *
 *   {"sink":"work","key":"f-1"}           a handler's effect
 *   {"sink":"mail","key":"clm_…"}         a subscriber's effect
 *
 * faults.jsonl, one line per fault the schedule injected:
 *
 *   {"kind":"kill9","target":"work-3","wall":…,"recovered":…}
 *
 *   kind   kill9 | stop_cont | cut | cut_after_commit | blackhole |
 *          latency | terminate_backend | pg_restart | held_xmin |
 *          idle_in_tx | retry_storm
 *   recovered  the wall time the system was next seen making progress
 *              (a result committed after the fault ended)
 *
 * The final state, dumped by the harness after the drain, so that the
 * checker reads files only (and its unit tests need no database):
 *
 *   items.jsonl       {"item":"f-1","state":"done","attempts":2,
 *                      "poison":false}
 *   results.jsonl     {"item":"f-1","token":"…","attempt":2,
 *                      "committed":…}   (committed: the wall time of the
 *                                        result's commit, from
 *                                        pg_xact_commit_timestamp or
 *                                        finished_at)
 *   deliveries.jsonl  {"sub":"mail","item":"f-1","state":"sent",
 *                      "key":"clm_…","attempts":1}
 *   subscribers.jsonl {"sub":"mail"}   (each must get every result)
 */
#ifndef CLAIMER_FAULTS_HISTORY_H
#define CLAIMER_FAULTS_HISTORY_H

#endif
