-- iotpipe: the PostgreSQL schema (PostgreSQL 14 or later). The plugin applies it at start when
-- plugin_opt_pg_conninfo is set; every statement is idempotent, so applying it by hand first
-- (psql -f conf/schema.sql) is fine too. With the timescaledb extension installed in the database,
-- the plugin makes metrics and metrics_agg hypertables instead of the second part below.

-- The device registry, read by the plugin when plugin_opt_registry_file is unset. Changes reach
-- the running broker through NOTIFY iotpipe_registry, no restart.
CREATE TABLE IF NOT EXISTS devices (
	device_id text PRIMARY KEY,
	location text,
	zone text,
	device_type text
);
CREATE TABLE IF NOT EXISTS sensors (
	device_id text NOT NULL REFERENCES devices (device_id) ON UPDATE CASCADE ON DELETE CASCADE,
	sensor_id text NOT NULL,
	ordinal integer NOT NULL DEFAULT 0,   -- the device's lowest is its default sensor
	unit text,
	min double precision,
	max double precision,
	threshold double precision,
	anomaly_z double precision,           -- NULL: plugin_opt_anomaly_z
	PRIMARY KEY (device_id, sensor_id)
);
CREATE OR REPLACE FUNCTION iotpipe_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('iotpipe_registry', TG_TABLE_NAME);
	RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER devices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices
	FOR EACH STATEMENT EXECUTE FUNCTION iotpipe_registry_changed();
CREATE OR REPLACE TRIGGER sensors_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sensors
	FOR EACH STATEMENT EXECUTE FUNCTION iotpipe_registry_changed();

-- Alerts and quarantined records; their key is the record's stable id.
CREATE TABLE IF NOT EXISTS alerts (
	id bigint PRIMARY KEY,
	device_id text NOT NULL,
	sensor_id text NOT NULL,
	ts timestamptz NOT NULL,
	kind text NOT NULL,                   -- threshold, zscore
	state text NOT NULL,                  -- firing, resolved
	value double precision,
	limit_value double precision,
	score double precision,
	unit text,
	location text,
	zone text
);
CREATE INDEX IF NOT EXISTS alerts_ts_brin ON alerts USING brin (ts);
CREATE INDEX IF NOT EXISTS alerts_device_ts ON alerts (device_id, ts);
CREATE TABLE IF NOT EXISTS quarantine (
	id bigint PRIMARY KEY,
	reason text NOT NULL,                 -- malformed_payload, unknown_device, ... sink_rejected
	detail text,
	device_id text,
	sensor_id text,
	topic text,
	client_id text,
	username text,
	qos smallint,
	payload bytea,                        -- as published (its head when truncated)
	payload_bytes integer,                -- the size published
	truncated boolean NOT NULL,
	arrival timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_arrival_brin ON quarantine USING brin (arrival);

-- The hot tier on plain PostgreSQL: readings partitioned by day (metrics_pYYYYMMDD, UTC days),
-- made ahead and on demand by the plugin and dropped after plugin_opt_hot_retention.
CREATE TABLE IF NOT EXISTS metrics (
	device_id text NOT NULL,
	sensor_id text NOT NULL,
	ts timestamptz NOT NULL,              -- the device's timestamp (arrival time when it sent none)
	value double precision NOT NULL,      -- in the registry's unit when it names one
	unit text,
	location text,
	zone text,
	device_type text,
	threshold double precision,
	is_anomaly boolean NOT NULL,
	zscore double precision,
	ts_missing boolean NOT NULL,          -- no timestamp in the payload: ts is the arrival time
	late boolean NOT NULL,                -- after its window closed: stored, not aggregated
	unenriched boolean NOT NULL,          -- the registry did not know the device
	id bigint NOT NULL,                   -- the stable record id (lpad(to_hex(id), 16, '0') is its text form)
	arrival timestamptz NOT NULL,         -- when the broker received it
	PRIMARY KEY (device_id, sensor_id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS metrics_ts_brin ON metrics USING brin (ts);
CREATE TABLE IF NOT EXISTS metrics_agg (
	device_id text NOT NULL,
	sensor_id text NOT NULL,
	window_start timestamptz NOT NULL,
	window_end timestamptz NOT NULL,
	count bigint NOT NULL,
	avg double precision,
	min double precision,
	max double precision,
	sum double precision,
	first_ts timestamptz,
	last_ts timestamptz,
	unit text,
	location text,
	zone text,
	id bigint NOT NULL,
	PRIMARY KEY (device_id, sensor_id, window_start)
);
CREATE INDEX IF NOT EXISTS metrics_agg_window_brin ON metrics_agg USING brin (window_start);
