#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "series.h"
#include "window.h"

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static int64_t rnd(int64_t lo, int64_t hi)   /* inclusive */
{
	return lo + (int64_t)(rng() % (uint64_t)(hi - lo + 1));
}

static void test_align(void **state)
{
	assert_int_equal(win_align(0, 1000), 0);
	assert_int_equal(win_align(999, 1000), 0);
	assert_int_equal(win_align(1000, 1000), 1000);
	assert_int_equal(win_align(1673456789123, 300000), 1673456700000);
	assert_int_equal(win_align(-1, 1000), -1000);
	assert_int_equal(win_align(-1000, 1000), -1000);
	assert_int_equal(win_align(-1001, 1000), -2000);
}

static void test_basic_close_and_late(void **state)
{
	const struct win_params p = {.window_ms = 1000, .lateness_ms = 100};
	struct ip_aggregate a[2];
	struct win_state w;
	bool late;

	win_init(&w);
	assert_false(win_has_open(&w));
	assert_int_equal(win_observe(&w, &p, 1500, 1.0, &late, a), 0);
	assert_false(late);
	assert_int_equal(win_observe(&w, &p, 1200, 3.0, &late, a), 0);
	/* next window, but within lateness: window 1000 stays open */
	assert_int_equal(win_observe(&w, &p, 2050, 10.0, &late, a), 0);
	assert_int_equal(win_observe(&w, &p, 1999, 2.0, &late, a), 0);
	assert_false(late);
	/* the watermark (2100 - 100) reaches the end of window 1000 */
	assert_int_equal(win_observe(&w, &p, 2100, 20.0, &late, a), 1);
	assert_int_equal(a[0].win_start_ms, 1000);
	assert_int_equal(a[0].win_end_ms, 2000);
	assert_int_equal(a[0].first_ts_ms, 1200);
	assert_int_equal(a[0].last_ts_ms, 1999);
	assert_int_equal(a[0].count, 3);
	assert_true(a[0].sum == 6.0 && a[0].min == 1.0 && a[0].max == 3.0);
	assert_null(a[0].device_id);
	/* now late: counted by the caller, not folded */
	assert_int_equal(win_observe(&w, &p, 1999, 100.0, &late, a), 0);
	assert_true(late);
	/* a reading far ahead closes the current window */
	assert_int_equal(win_observe(&w, &p, 9000, 5.0, &late, a), 1);
	assert_false(late);
	assert_int_equal(a[0].win_start_ms, 2000);
	assert_int_equal(a[0].count, 2);
	assert_true(a[0].sum == 30.0);
	assert_true(win_has_open(&w));
	assert_int_equal(win_flush(&w, &p, a), 1);
	assert_int_equal(a[0].win_start_ms, 9000);
	assert_false(win_has_open(&w));
	assert_int_equal(win_flush(&w, &p, a), 0);
	assert_int_equal(win_observe(&w, &p, 9999, 5.0, &late, a), 0);
	assert_true(late);
}

static void test_two_windows_closed_at_once(void **state)
{
	const struct win_params p = {.window_ms = 1000, .lateness_ms = 500};
	struct ip_aggregate a[2];
	struct win_state w;
	bool late;

	win_init(&w);
	win_observe(&w, &p, 900, 1.0, &late, a);
	win_observe(&w, &p, 1100, 2.0, &late, a);   /* window 0 still open: watermark 600 */
	assert_int_equal(win_observe(&w, &p, 5000, 3.0, &late, a), 2);
	assert_int_equal(a[0].win_start_ms, 0);
	assert_int_equal(a[1].win_start_ms, 1000);
	assert_true(a[0].sum == 1.0 && a[1].sum == 2.0);
}

struct reading {
	int64_t ts;
	double v;
	bool late;
};

struct agg_rec {
	struct ip_aggregate a;
	int at;                     /* reading index whose observe emitted it, or -1 for a flush */
};

static int cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;

	return (a > b) - (a < b);
}

/* One random stream through one window state, then a brute-force check of every emitted
 * aggregate. mode: 0 in order, 1 out of order within lateness, 2 plus late readings and jumps,
 * 3 as 2 plus flushes (a quiet series swept) at random points. */
static void run_property(uint64_t seed, int mode, int64_t W, int64_t L, int n, uint64_t totals[3])
{
	const struct win_params p = {.window_ms = W, .lateness_ms = L};
	struct reading *rd = calloc((size_t)n, sizeof(*rd));
	struct agg_rec *ag = calloc((size_t)n + 4, sizeof(*ag));
	int64_t *starts = calloc((size_t)n, sizeof(*starts));
	int64_t t, maxts = INT64_MIN, flushed_until = INT64_MIN;
	struct ip_aggregate out[2];
	struct win_state w;
	int i, j, n_ag = 0, n_late = 0, n_starts = 0, n_flush = 0;
	size_t k, m;
	bool late;

	rng_state = seed * 0x9E3779B97F4A7C15ull + (uint64_t)mode + 1;
	t = (seed & 1) ? 1700000000000 : W * 3;
	win_init(&w);
	for(i = 0; i < n; i++){
		int64_t ts = t;

		t += rnd(0, W / 20);
		if(mode >= 1) ts = t - rnd(0, L);
		if(mode >= 2 && rnd(0, 99) < 5) ts = t - rnd(L, 3 * W);    /* likely late */
		if(mode >= 2 && rnd(0, 199) == 0) t += rnd(W, 5 * W);      /* far ahead */
		if(ts < 0) ts = 0;
		rd[i].ts = ts;
		rd[i].v = (double)rnd(-100000, 100000) / 7.0;

		if(mode == 3 && rnd(0, 299) == 0){
			m = win_flush(&w, &p, out);
			for(k = 0; k < m; k++){
				ag[n_ag].a = out[k];
				ag[n_ag++].at = -1;
			}
			n_flush++;
			/* oracle: a flush closes everything up to the end of the max ts window */
			if(maxts != INT64_MIN && win_align(maxts, W) + W > flushed_until) flushed_until = win_align(maxts, W) + W;
		}

		/* oracle: late when the window ends at or before a watermark already reached */
		rd[i].late = maxts != INT64_MIN && (win_align(ts, W) + W <= maxts - L || win_align(ts, W) + W <= flushed_until);

		m = win_observe(&w, &p, ts, rd[i].v, &late, out);
		assert_int_equal(late, rd[i].late);
		n_late += late;
		for(k = 0; k < m; k++){
			/* emitted exactly when this reading's watermark passed the end, not before */
			int64_t newmax = ts > maxts ? ts : maxts;

			assert_true(out[k].win_end_ms <= newmax - L);
			assert_true(maxts == INT64_MIN || out[k].win_end_ms > maxts - L);
			if(k > 0) assert_true(out[k].win_start_ms > out[k - 1].win_start_ms);
			ag[n_ag].a = out[k];
			ag[n_ag++].at = i;
		}
		if(ts > maxts) maxts = ts;
	}
	m = win_flush(&w, &p, out);
	for(k = 0; k < m; k++){
		ag[n_ag].a = out[k];
		ag[n_ag++].at = -1;
	}
	assert_false(win_has_open(&w));

	/* every window with a non-late reading is emitted exactly once, and matches a recomputation
	 * over its readings in arrival order (so even the sum is bit for bit) */
	for(i = 0; i < n; i++) if(!rd[i].late) starts[n_starts++] = win_align(rd[i].ts, W);
	qsort(starts, (size_t)n_starts, sizeof(*starts), cmp_i64);
	j = 0;
	for(i = 0; i < n_starts; i++) if(i == 0 || starts[i] != starts[i - 1]) starts[j++] = starts[i];
	assert_int_equal(j, n_ag);

	uint64_t total = 0;
	for(i = 0; i < n_ag; i++){
		const struct ip_aggregate *a = &ag[i].a;
		double sum = 0.0, mn = INFINITY, mx = -INFINITY;
		int64_t first = INT64_MAX, last = INT64_MIN;
		uint32_t count = 0;

		assert_int_equal(a->win_start_ms % W, 0);
		assert_int_equal(a->win_end_ms, a->win_start_ms + W);
		assert_non_null(bsearch(&a->win_start_ms, starts, (size_t)j, sizeof(*starts), cmp_i64));
		for(int q = 0; q < i; q++) assert_true(ag[q].a.win_start_ms != a->win_start_ms);
		for(int r = 0; r < n; r++){
			if(rd[r].late || win_align(rd[r].ts, W) != a->win_start_ms) continue;
			/* folded before the window was emitted */
			if(ag[i].at >= 0) assert_true(r <= ag[i].at);
			sum += rd[r].v;
			if(rd[r].v < mn) mn = rd[r].v;
			if(rd[r].v > mx) mx = rd[r].v;
			if(rd[r].ts < first) first = rd[r].ts;
			if(rd[r].ts > last) last = rd[r].ts;
			count++;
		}
		assert_int_equal(a->count, count);
		assert_true(a->sum == sum);
		assert_true(a->min == mn);
		assert_true(a->max == mx);
		assert_int_equal(a->first_ts_ms, first);
		assert_int_equal(a->last_ts_ms, last);
		total += count;
	}
	assert_int_equal(total + (uint64_t)n_late, (uint64_t)n);
	if(mode >= 2) assert_true(n_late > 0);
	if(mode < 2) assert_int_equal(n_late, 0);
	if(mode == 3) assert_true(n_flush > 0);
	totals[0] += (uint64_t)n;
	totals[1] += (uint64_t)n_late;
	totals[2] += (uint64_t)n_ag;

	free(rd);
	free(ag);
	free(starts);
}

static void test_property_random_streams(void **state)
{
	const int64_t sizes[][2] = {{1000, 200}, {1000, 0}, {1000, 1000}, {300000, 10000}, {7, 3}};
	uint64_t seed, totals[3] = {0, 0, 0};
	size_t s;
	int mode;

	for(s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++){
		for(mode = 0; mode < 4; mode++){
			for(seed = 1; seed <= 6; seed++) run_property(seed, mode, sizes[s][0], sizes[s][1], 3000, totals);
		}
	}
	printf("property: %" PRIu64 " readings, %" PRIu64 " late, %" PRIu64 " aggregates checked\n",
			totals[0], totals[1], totals[2]);
}

/* ---- by processing time, through the series table ---- */

struct emitted {
	struct ip_aggregate a[64];
	int n;
};

static void collect(void *ctx, const struct ip_aggregate *a)
{
	struct emitted *e = ctx;

	assert_true(e->n < 64);
	e->a[e->n++] = *a;
}

static void test_sweep_closes_quiet_series(void **state)
{
	struct series_params p;
	struct series_table *t;
	struct series_out o;
	struct emitted e = {.n = 0};

	series_params_default(&p);
	p.window_ms = 60000;
	p.lateness_ms = 5000;
	t = series_table_new(&p);
	assert_non_null(t);

	/* event times and processing times on different clocks on purpose */
	assert_int_equal(series_observe(t, "dev-a", "temp", 120000, 1.0, NAN, 0, 1000, &o), IP_OK);
	assert_int_equal(series_observe(t, "dev-a", "temp", 179000, 2.0, NAN, 0, 2000, &o), IP_OK);
	assert_int_equal(series_observe(t, "dev-a", "temp", 181000, 4.0, NAN, 0, 3000, &o), IP_OK);
	assert_int_equal(series_observe(t, "dev-b", "temp", 500000, 7.0, NAN, 0, 50000, &o), IP_OK);
	assert_int_equal(o.n_aggs, 0);

	/* dev-a quiet since 3000: due at 3000 + 65000 */
	series_sweep(t, 67999, collect, &e);
	assert_int_equal(e.n, 0);
	series_sweep(t, 68000, collect, &e);
	assert_int_equal(e.n, 2);
	assert_string_equal(e.a[0].device_id, "dev-a");
	assert_string_equal(e.a[0].sensor_id, "temp");
	assert_int_equal(e.a[0].win_start_ms, 120000);
	assert_int_equal(e.a[0].count, 2);
	assert_true(e.a[0].sum == 3.0);
	assert_int_equal(e.a[1].win_start_ms, 180000);
	assert_int_equal(e.a[1].count, 1);

	/* once swept, nothing more until dev-b is due, and nothing twice */
	series_sweep(t, 100000, collect, &e);
	assert_int_equal(e.n, 2);

	/* a reading for a swept window is late; the next window opens normally */
	assert_int_equal(series_observe(t, "dev-a", "temp", 200000, 9.0, NAN, 0, 110000, &o), IP_OK);
	assert_true(o.late);
	assert_int_equal(series_observe(t, "dev-a", "temp", 240000, 9.0, NAN, 0, 110000, &o), IP_OK);
	assert_false(o.late);
	struct series_stats st;
	series_get_stats(t, &st);
	assert_int_equal(st.late, 1);

	/* dev-b (seen at 50000) is due at 115000; dev-a (110000) at 175000 */
	series_sweep(t, 115000, collect, &e);
	assert_int_equal(e.n, 3);
	assert_string_equal(e.a[2].device_id, "dev-b");
	series_sweep(t, 175000, collect, &e);
	assert_int_equal(e.n, 4);
	assert_string_equal(e.a[3].device_id, "dev-a");
	assert_int_equal(e.a[3].win_start_ms, 240000);
	assert_true(e.a[3].sum == 9.0);

	/* a processing clock stepping back does not reorder anything */
	assert_int_equal(series_observe(t, "dev-c", "temp", 1000, 1.0, NAN, 0, 10, &o), IP_OK);
	series_sweep(t, 175000 + 64999, collect, &e);
	assert_int_equal(e.n, 4);
	series_sweep(t, 175000 + 65000, collect, &e);
	assert_int_equal(e.n, 5);
	series_table_free(t);
}

static void test_sweep_many_series_only_due(void **state)
{
	struct series_params p;
	struct series_table *t;
	struct series_out o;
	struct emitted e = {.n = 0};
	char dev[32];
	int i;

	series_params_default(&p);
	p.window_ms = 1000;
	p.lateness_ms = 0;
	t = series_table_new(&p);
	/* 50 series seen at processing times 0, 100, ..., 4900 */
	for(i = 0; i < 50; i++){
		snprintf(dev, sizeof(dev), "d%02d", i);
		assert_int_equal(series_observe(t, dev, "s", 5000, (double)i, NAN, 0, i * 100, &o), IP_OK);
	}
	/* due: seen + 1000 <= now, so at 5000 the first 41, oldest first */
	series_sweep(t, 5000, collect, &e);
	assert_int_equal(e.n, 41);
	for(i = 0; i < e.n; i++){
		snprintf(dev, sizeof(dev), "d%02d", i);
		assert_string_equal(e.a[i].device_id, dev);
	}
	e.n = 0;
	series_sweep(t, 5000, collect, &e);
	assert_int_equal(e.n, 0);
	/* re-seen series go to the back of the line */
	assert_int_equal(series_observe(t, "d45", "s", 5001, 1.0, NAN, 0, 5050, &o), IP_OK);
	series_sweep(t, 5900, collect, &e);
	assert_int_equal(e.n, 8);
	for(i = 0; i < e.n; i++) assert_string_not_equal(e.a[i].device_id, "d45");
	series_sweep(t, 6050, collect, &e);
	assert_int_equal(e.n, 9);
	assert_string_equal(e.a[8].device_id, "d45");
	assert_int_equal(e.a[8].count, 2);
	series_table_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_align),
		cmocka_unit_test(test_basic_close_and_late),
		cmocka_unit_test(test_two_windows_closed_at_once),
		cmocka_unit_test(test_property_random_streams),
		cmocka_unit_test(test_sweep_closes_quiet_series),
		cmocka_unit_test(test_sweep_many_series_only_due),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
