// bench/peers/graphile.js: one side of bench/peers/graphile-vs-claimer.
//
//   node graphile.js enqueue DSN N          N no-op jobs, 1,000 per addJobs
//   node graphile.js work DSN C batched|default
//
// work runs one graphile-worker pool of concurrency C with a no-op task
// until the jobs table is empty, then stops.  "batched" is the mode the
// graphile-worker docs give for throughput: a local queue of 500 jobs
// fetched at once and completions batched with no added delay.
const { run, makeWorkerUtils, Logger } = require("graphile-worker");
const { Pool } = require("pg");

const quiet = new Logger(() => () => {});
const [, , mode, dsn, arg1, arg2] = process.argv;

async function enqueue(n) {
  const utils = await makeWorkerUtils({ connectionString: dsn, logger: quiet });
  await utils.migrate();
  for (let i = 0; i < n; i += 1000) {
    const specs = [];
    for (let j = i; j < Math.min(n, i + 1000); j++)
      specs.push({ identifier: "noop", payload: { n: j } });
    await utils.addJobs(specs);
  }
  await utils.release();
}

async function work(concurrency, batched) {
  const preset = batched
    ? { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
    : {};
  const runner = await run({
    connectionString: dsn, logger: quiet, concurrency, noHandleSignals: true,
    pollInterval: 1000, preset, taskList: { noop: async () => {} },
  });
  // Done when no job is left: one probe of the key index every 50 ms,
  // not a count of the whole table (which charged graphile-worker's runs
  // with a scan of up to N rows per poll).  At 30,000 jobs/s the stop is
  // late by 25 ms on average, about 0.4 % of a 200,000-job run.
  const pool = new Pool({ connectionString: dsn, max: 1 });
  for (;;) {
    const r = await pool.query(
      "SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs ORDER BY id LIMIT 1) AS left");
    if (!r.rows[0].left) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  await runner.stop();
  await pool.end();
}

const done = mode === "enqueue" ? enqueue(Number(arg1))
  : mode === "work" ? work(Number(arg1), arg2 === "batched")
  : Promise.reject(new Error(`unknown mode '${mode}' (enqueue or work)`));
done.catch((e) => { console.error(`graphile.js: ${e.message}`); process.exit(1); });
