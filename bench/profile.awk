# bench/profile.awk: sorts the PostgreSQL server's samples of a perf
# profile into where the work went, for bench/run section 7.
#
#   perf script -F comm,ip,sym | awk -f bench/profile.awk
#
# Input: one sample per block (a line naming the process, then its call
# chain, innermost frame first, one tab-indented "address symbol" line
# per frame; a blank line ends it).  Only the samples of processes named postgres count.  A sample
# goes to the first category in the order below that any frame of its
# chain names, so that the WAL a B-tree insert writes counts as WAL, and
# the unique check inside an index insert counts as that insert.  Static
# functions of a stripped server show as [unknown]; the exported ones
# named here are enough to place nearly every sample.
#
# Output: "category samples" lines, then "total N".

BEGIN {
  n = 0
  # order: category (its frames, space separated)
  cat[++n] = "wal_flush";     fr[n] = "XLogFlush XLogBackgroundFlush issue_xlog_fsync XLogFileInit"
  cat[++n] = "wal_insert";    fr[n] = "XLogInsert XLogInsertRecord XLogRecordAssemble"
  cat[++n] = "autovacuum";    fr[n] = "AutoVacWorkerMain AutoVacLauncherMain"
  cat[++n] = "checkpoint";    fr[n] = "CheckpointerMain BackgroundWriterMain WalWriterMain"
  cat[++n] = "index_insert";  fr[n] = "btinsert _bt_doinsert index_insert"
  cat[++n] = "heap_write";    fr[n] = "heap_insert heap_update heap_delete heap_lock_tuple heap_multi_insert heap_abort_speculative heap_finish_speculative"
  cat[++n] = "constraints";   fr[n] = "ExecConstraints"
  cat[++n] = "index_scan";    fr[n] = "btgettuple btgetbitmap index_getnext_tid _bt_first _bt_next ExecCheckIndexConstraints"
  cat[++n] = "heap_read";     fr[n] = "heap_hot_search_buffer heapam_index_fetch_tuple heap_fetch heap_getnextslot heap_page_prune_opt"
  cat[++n] = "plan";          fr[n] = "planner standard_planner pg_plan_query pg_plan_queries BuildCachedPlan RevalidateCachedQuery"
  cat[++n] = "parse";         fr[n] = "raw_parser pg_parse_query parse_analyze_fixedparams parse_analyze_varparams pg_analyze_and_rewrite_fixedparams pg_analyze_and_rewrite_varparams pg_rewrite_query"
  cat[++n] = "commit";        fr[n] = "CommitTransactionCommand CommitTransaction"
  cat[++n] = "executor";      fr[n] = "standard_ExecutorRun standard_ExecutorFinish standard_ExecutorStart standard_ExecutorEnd ExecutorStart ExecutorRun ExecutorFinish ExecutorEnd"
  cat[++n] = "backend_other"; fr[n] = "PostgresMain"
  ncat = n
  for (i = 1; i <= ncat; i++) {
    m = split(fr[i], a, " ")
    for (j = 1; j <= m; j++)
      rank[a[j]] = i
  }
  insample = 0
}

function flush_sample() {
  if (insample && ispg) {
    c = best <= ncat ? cat[best] : "other"
    count[c]++
    total++
  }
  insample = 0
}

/^[ \t]*$/ {
  flush_sample()
  next
}

/^[^\t]/ {
  flush_sample()
  insample = 1
  ispg = ($1 == "postgres")
  best = ncat + 1
  next
}

{
  s = $NF
  if (s in rank && rank[s] < best)
    best = rank[s]
}

END {
  flush_sample()
  for (i = 1; i <= ncat; i++)
    printf "%s %d\n", cat[i], count[cat[i]] + 0
  printf "other %d\n", count["other"] + 0
  printf "total %d\n", total + 0
}
