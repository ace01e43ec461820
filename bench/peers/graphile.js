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
  const pool = new Pool({ connectionString: dsn, max: 1 });
  for (;;) {
    const r = await pool.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs");
    if (r.rows[0].n === 0) break;
    await new Promise((res) => setTimeout(res, 20));
  }
  await runner.stop();
  await pool.end();
}

const done = mode === "enqueue" ? enqueue(Number(arg1))
  : mode === "work" ? work(Number(arg1), arg2 === "batched")
  : Promise.reject(new Error(`unknown mode '${mode}' (enqueue or work)`));
done.catch((e) => { console.error(`graphile.js: ${e.message}`); process.exit(1); });
