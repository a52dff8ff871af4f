-- duckcluster operations catalog: background runs, triggers, drift checks, webhooks.
-- Idempotent; run by duckcluster.install(con) after catalog.sql. Plain tables, so any
-- DuckDB client (and the Prometheus exporter, read-only) can read them.

-- Background runs: the stage a run is at, and when it was submitted (started_at is
-- when it left the queue, so duration_s is the execution time).
ALTER TABLE duckcluster.runs ADD COLUMN IF NOT EXISTS progress VARCHAR;
ALTER TABLE duckcluster.runs ADD COLUMN IF NOT EXISTS submitted_at TIMESTAMP;

-- One row per trigger. kind decides which condition columns are set:
--   cron      schedule (5-field crontab) in timezone
--   interval  every_s
--   event     when_rows_added and/or when_drift_above (+ method, drift_current);
--             every_s, if set, is the least time between two evaluations
CREATE TABLE IF NOT EXISTS duckcluster.triggers (
    trigger_id           VARCHAR PRIMARY KEY,
    name                 VARCHAR NOT NULL,     -- cluster definition
    kind                 VARCHAR NOT NULL,     -- cron | interval | event
    schedule             VARCHAR,
    timezone             VARCHAR,
    every_s              DOUBLE,
    when_rows_added      BIGINT,
    when_drift_above     DOUBLE,
    method               VARCHAR,              -- drift method (embedding_drift's names)
    drift_current        VARCHAR,              -- new_rows | source
    mode                 VARCHAR NOT NULL,     -- full | assign: the run a firing starts
    assignment_threshold DOUBLE,
    cooldown_s           DOUBLE,               -- event: quiet time after a failed firing
    enabled              BOOLEAN NOT NULL,
    created_at           TIMESTAMP NOT NULL,
    last_scheduled_at    TIMESTAMP,            -- cron/interval: the due time last served
    last_fired_at        TIMESTAMP,
    last_checked_at      TIMESTAMP,
    last_check           JSON,                 -- what the last evaluation saw
    last_error           VARCHAR               -- why the last evaluation failed, if it did
);

-- One row per firing: when, why, and the run it started (or why it started none).
CREATE TABLE IF NOT EXISTS duckcluster.trigger_firings (
    firing_id     VARCHAR PRIMARY KEY,
    trigger_id    VARCHAR NOT NULL,
    name          VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL,
    fired_at      TIMESTAMP NOT NULL,
    scheduled_for TIMESTAMP,                   -- cron/interval: the due time
    reason        VARCHAR NOT NULL,
    observed      JSON,                        -- row counts or drift figures behind it
    run_id        VARCHAR,                     -- NULL when the firing started no run
    outcome       VARCHAR NOT NULL,            -- submitted | skipped | error
    error         VARCHAR
);

-- One row per drift evaluation of an event trigger (the exporter's drift gauges).
CREATE TABLE IF NOT EXISTS duckcluster.drift_checks (
    check_id         VARCHAR PRIMARY KEY,
    name             VARCHAR NOT NULL,
    trigger_id       VARCHAR,
    checked_at       TIMESTAMP NOT NULL,
    method           VARCHAR NOT NULL,
    baseline_run_id  VARCHAR NOT NULL,
    drift_current    VARCHAR NOT NULL,
    statistic        DOUBLE,
    p_value          DOUBLE,
    alpha            DOUBLE,
    drift_detected   BOOLEAN,                  -- p_value < alpha
    threshold        DOUBLE,                   -- the trigger's when_drift_above
    above_threshold  BOOLEAN,                  -- statistic > threshold: drift.detected
    n_baseline       BIGINT,
    n_current        BIGINT,
    details          JSON
);

-- Webhooks: name NULL = every definition. secret is used for the HMAC signature;
-- secret_env names an environment variable holding it instead (kept out of the file).
CREATE TABLE IF NOT EXISTS duckcluster.webhooks (
    webhook_id   VARCHAR PRIMARY KEY,
    name         VARCHAR,
    url          VARCHAR NOT NULL,
    events       VARCHAR[] NOT NULL,
    secret       VARCHAR,
    secret_env   VARCHAR,
    timeout_s    DOUBLE NOT NULL,
    max_attempts INTEGER NOT NULL,
    enabled      BOOLEAN NOT NULL,
    created_at   TIMESTAMP NOT NULL
);

-- One row per HTTP attempt. A delivery (one event to one webhook) keeps its
-- delivery_id across attempts; its last row says delivered or failed.
CREATE TABLE IF NOT EXISTS duckcluster.webhook_deliveries (
    delivery_id  VARCHAR NOT NULL,
    webhook_id   VARCHAR NOT NULL,
    name         VARCHAR,
    event        VARCHAR NOT NULL,             -- run.succeeded | run.failed | drift.detected
    subject_id   VARCHAR NOT NULL,             -- run_id or drift check_id
    attempt      INTEGER NOT NULL,
    attempted_at TIMESTAMP NOT NULL,
    status       VARCHAR NOT NULL,             -- delivered | retrying | failed
    http_status  INTEGER,
    error        VARCHAR,
    duration_s   DOUBLE,
    payload      JSON
);
