/* The series table: (device, sensor) -> duplicate memory, detector state and open windows, in
 * 176 bytes of state plus its share of the index and of the interned names (about 200 bytes per
 * series in all; tests/unit/test_series.c measures it).
 *
 * Limits, by design:
 * - Duplicates: the last SERIES_DEDUP_DEPTH event times of each series are remembered. That covers
 *   QoS 1 retransmissions and replays of recent readings; an older replay gets through here (into
 *   the detectors, and into a window if that is still open) and the PostgreSQL sink's ON CONFLICT
 *   drops its row.
 * - Series are never evicted while the table lives (their baselines and duplicate memory are the
 *   point of keeping them), so the interned name pointers in aggregates stay valid until
 *   series_table_free and names need no refcounts. Memory grows with the number of distinct
 *   (device, sensor) pairs ever seen.
 * - Not thread-safe: one processor thread owns a table. */
#ifndef IOTPIPE_SERIES_H
#define IOTPIPE_SERIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "detect.h"
#include "reason.h"
#include "window.h"

#define SERIES_NAME_MAX 255        /* bytes of a device or sensor id, without the NUL */
#define SERIES_DEDUP_DEPTH 4
#define SERIES_TS_MAX 253402300799999LL   /* 9999-12-31T23:59:59.999Z */

struct series_params {
	int64_t window_ms;          /* tumbling window size (option `window`), 1 .. UINT32_MAX */
	int64_t lateness_ms;        /* allowed lateness, >= 0; capped at window_ms */
	double z_default;           /* > 0: z limit when the sensor sets no anomalyZ */
	uint32_t z_min_samples;     /* >= 2: no z-score verdict before this many samples */
	double hysteresis;          /* >= 0: fraction of |threshold| a value must fall below it to resolve */
	double ewma_alpha;          /* (0, 1]: baseline EWMA weight (about a 2/alpha-sample memory); 0 = default */
};

/* Defaults: window 5 min; lateness 10 s (QoS 1 retries and reconnect bursts arrive within seconds,
 * and every second of lateness delays each aggregate by as much; readings a device buffered for
 * longer are still stored, flagged late); z 3.0 after 30 samples; hysteresis 2 %; alpha 0.02. */
#define SERIES_DEFAULT_WINDOW_MS 300000
#define SERIES_DEFAULT_LATENESS_MS 10000
#define SERIES_DEFAULT_Z 3.0
#define SERIES_DEFAULT_Z_MIN_SAMPLES 30
#define SERIES_DEFAULT_HYSTERESIS 0.02
#define SERIES_DEFAULT_EWMA_ALPHA 0.02

struct series_out {
	bool is_anomaly;            /* z-score verdict for this reading */
	double zscore;              /* NAN before z_min_samples */
	bool late;                  /* reading belongs to a window already closed: stored, counted, not folded in */
	size_t n_alerts;
	struct ip_alert alerts[4];
	size_t n_aggs;
	struct ip_aggregate aggs[2];   /* windows closed by this reading's event time, oldest first */
};

struct series_stats {
	uint64_t late;              /* readings flagged late */
	uint64_t duplicates;        /* readings refused as IP_R_DUPLICATE */
	uint64_t nomem;             /* readings processed without state: no memory for a new series */
};

struct series_table;

/* any thread: fills p with the defaults above */
void series_params_default(struct series_params *p);

/* processor thread: NULL when out of memory or p holds a value outside the ranges above */
struct series_table *series_table_new(const struct series_params *p);

/* processor thread. Returns IP_R_DUPLICATE (and changes nothing) when (device, sensor, ts) was seen
 * recently (QoS 1 retransmissions, replays); else IP_OK and fills out. threshold NAN = none;
 * z_limit 0 = z_default. Defensive refusals, which also change nothing: IP_R_ID_INVALID (empty id or
 * longer than SERIES_NAME_MAX), IP_R_NON_FINITE_VALUE, IP_R_BAD_TIMESTAMP (outside
 * 0..SERIES_TS_MAX). Out of memory for a new series: IP_OK, out without verdict, counted in nomem.
 * The detectors judge every reading that is not a duplicate, late ones included, in arrival order.
 * now_ms is processing time, from the same clock as series_sweep's (use the ingest arrival time to
 * make a replay reproduce the same outputs); it is taken as max(now_ms, the largest seen). */
enum ip_reason series_observe(struct series_table *t, const char *device_id, const char *sensor_id,
		int64_t ts_ms, double value, double threshold, double z_limit, int64_t now_ms, struct series_out *out);

/* processor thread: closes the windows of series quiet for window_ms + lateness_ms of processing
 * time and calls emit once per closed window. O(1) when nothing is due: series sit on a list in
 * order of their last reading, so only the due ones at its head are touched. */
void series_sweep(struct series_table *t, int64_t now_ms,
		void (*emit)(void *ctx, const struct ip_aggregate *a), void *ctx);

/* processor thread: the whole state (baselines, alert states, open windows, duplicate memory, sweep
 * order, tag) to path.tmp, fsync, rename to path, fsync the directory: series_write then series_publish. */
bool series_save(const struct series_table *t, const char *path, char *err, size_t errlen);

/* processor thread: the state into path.tmp, written and closed but not synced (page cache only) */
bool series_write(const struct series_table *t, const char *path, char *err, size_t errlen);

/* any thread, after series_write(path): fsync path.tmp, rename it to path, fsync the directory. The
 * slow part under I/O load, so the processor leaves it to another thread. */
bool series_publish(const char *path, char *err, size_t errlen);

/* processor thread: into an empty table (names handed out must stay valid) with the same window_ms
 * and lateness_ms as the one saved; other parameters may differ. Checks a checksum; on failure the
 * table is left empty and err says why. */
bool series_load(struct series_table *t, const char *path, char *err, size_t errlen);

/* processor thread: an opaque value saved and loaded with the state, e.g. the ingest LSN the state
 * reflects, so one rename commits both */
void series_set_tag(struct series_table *t, uint64_t tag);
uint64_t series_tag(const struct series_table *t);

/* processor thread */
size_t series_count(const struct series_table *t);

/* processor thread: bytes of memory held, all included (index, entries, interned names, allocator
 * headers estimated at 16 bytes per block) */
size_t series_bytes(const struct series_table *t);

/* processor thread */
void series_get_stats(const struct series_table *t, struct series_stats *s);

/* processor thread */
void series_table_free(struct series_table *t);

#endif
