/* Tumbling windows by event time, aligned to epoch multiples of the window size, with a per-series
 * watermark (max event ts - lateness). Pure functions over a 96-byte state.
 *
 * A window closes when the watermark reaches its end, or when win_flush closes everything (the
 * series went quiet). A reading whose window is closed is late: reported, never folded in. Because
 * lateness <= window, at most two windows are open at once: the one holding the max event ts and
 * the one before it, so the state holds exactly two slots. Empty windows are never emitted. */
#ifndef IOTPIPE_WINDOW_H
#define IOTPIPE_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ip_aggregate {
	const char *device_id, *sensor_id;   /* interned, valid until series_table_free; NULL from window.c */
	int64_t win_start_ms, win_end_ms;    /* [start, end) */
	int64_t first_ts_ms, last_ts_ms;     /* min and max event time folded in */
	uint32_t count;
	double sum, min, max;                /* avg = sum / count */
};

struct win_params {
	int64_t window_ms;          /* 1 .. UINT32_MAX (offsets in a window are 32-bit) */
	int64_t lateness_ms;        /* 0 .. window_ms */
};

#define WIN_CUR 0
#define WIN_PREV 1

struct win_state {
	int64_t cur_start;          /* window of max_ts */
	int64_t closed_until;       /* every window ending at or before this is closed */
	int64_t max_ts;             /* INT64_MIN before the first reading */
	double sum[2], min[2], max[2];        /* [WIN_CUR], [WIN_PREV] (cur_start - window_ms) */
	uint32_t count[2];                    /* 0: no reading, or already emitted */
	uint32_t first_off[2], last_off[2];   /* from the slot's window start */
};

/* processor thread */
void win_init(struct win_state *w);

/* processor thread: the start of the window holding ts_ms (floor, also for negative ts) */
int64_t win_align(int64_t ts_ms, int64_t window_ms);

/* processor thread: folds one reading in, or sets *late. Returns how many windows this reading's
 * event time closed (0..2, oldest first, written to out). Event times must stay far (one window)
 * from the int64 limits. */
size_t win_observe(struct win_state *w, const struct win_params *p, int64_t ts_ms, double value,
		bool *late, struct ip_aggregate out[2]);

/* processor thread: closes every open window (the series went quiet); returns how many, as above.
 * Readings for these windows are late from now on. */
size_t win_flush(struct win_state *w, const struct win_params *p, struct ip_aggregate out[2]);

/* processor thread: whether a window holds readings not yet emitted */
bool win_has_open(const struct win_state *w);

#endif
