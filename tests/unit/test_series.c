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
#include <unistd.h>

#include <xxhash.h>

#include "series.h"

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

static char tmpdir[64];

static int setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/iotpipe-test-series-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static struct series_table *new_table(int64_t window_ms, int64_t lateness_ms)
{
	struct series_params p;
	struct series_table *t;

	series_params_default(&p);
	p.window_ms = window_ms;
	p.lateness_ms = lateness_ms;
	t = series_table_new(&p);
	assert_non_null(t);
	return t;
}

static enum ip_reason put(struct series_table *t, const char *dev, const char *sensor, int64_t ts, double v,
		struct series_out *o)
{
	return series_observe(t, dev, sensor, ts, v, NAN, 0, ts, o);
}

static void test_params(void **state)
{
	struct series_params p, q;
	struct series_table *t;

	series_params_default(&p);
	assert_int_equal(p.window_ms, 300000);
	assert_true(p.z_default == 3.0);
	assert_int_equal(p.z_min_samples, 30);
	t = series_table_new(&p);
	assert_non_null(t);
	series_table_free(t);

	q = p; q.window_ms = 0;
	assert_null(series_table_new(&q));
	q = p; q.window_ms = (int64_t)UINT32_MAX + 1;
	assert_null(series_table_new(&q));
	q = p; q.z_default = 0;
	assert_null(series_table_new(&q));
	q = p; q.z_default = NAN;
	assert_null(series_table_new(&q));
	q = p; q.z_min_samples = 1;
	assert_null(series_table_new(&q));
	q = p; q.hysteresis = -0.1;
	assert_null(series_table_new(&q));
	q = p; q.ewma_alpha = 1.5;
	assert_null(series_table_new(&q));
	q = p; q.lateness_ms = -1;
	assert_null(series_table_new(&q));
	q = p; q.ewma_alpha = 0;   /* a caller unaware of the field */
	t = series_table_new(&q);
	assert_non_null(t);
	series_table_free(t);
	q = p; q.window_ms = 5000; q.lateness_ms = 60000;   /* capped at the window */
	t = series_table_new(&q);
	assert_non_null(t);
	series_table_free(t);
}

static void test_dedup(void **state)
{
	struct series_table *t = new_table(60000, 10000);
	struct series_stats st;
	struct series_out o;
	int64_t ts;

	assert_int_equal(put(t, "dev-1", "temp", 1000, 20.0, &o), IP_OK);
	assert_int_equal(put(t, "dev-1", "temp", 1000, 20.0, &o), IP_R_DUPLICATE);
	/* a retransmission with another value is the same reading */
	assert_int_equal(put(t, "dev-1", "temp", 1000, 99.0, &o), IP_R_DUPLICATE);
	assert_int_equal(put(t, "dev-1", "hum", 1000, 20.0, &o), IP_OK);
	assert_int_equal(put(t, "dev-2", "temp", 1000, 20.0, &o), IP_OK);
	/* ids that concatenate alike are different series */
	assert_int_equal(put(t, "dev-1t", "emp", 1000, 20.0, &o), IP_OK);
	assert_int_equal(series_count(t), 4);

	/* the last SERIES_DEDUP_DEPTH readings are remembered, out of order too */
	for(ts = 2000; ts <= 5000; ts += 1000) assert_int_equal(put(t, "dev-1", "temp", ts, 1.0, &o), IP_OK);
	assert_int_equal(put(t, "dev-1", "temp", 1500, 1.0, &o), IP_OK);
	for(ts = 3000; ts <= 5000; ts += 1000) assert_int_equal(put(t, "dev-1", "temp", ts, 1.0, &o), IP_R_DUPLICATE);
	assert_int_equal(put(t, "dev-1", "temp", 1500, 1.0, &o), IP_R_DUPLICATE);
	/* beyond the depth a replay gets through: the documented limit (the sink's ON CONFLICT) */
	assert_int_equal(put(t, "dev-1", "temp", 2000, 1.0, &o), IP_OK);

	/* a late reading is remembered as well */
	assert_int_equal(put(t, "dev-3", "temp", 1000, 1.0, &o), IP_OK);
	assert_int_equal(put(t, "dev-3", "temp", 500000, 1.0, &o), IP_OK);
	assert_int_equal(put(t, "dev-3", "temp", 2000, 1.0, &o), IP_OK);
	assert_true(o.late);
	assert_int_equal(put(t, "dev-3", "temp", 2000, 1.0, &o), IP_R_DUPLICATE);

	series_get_stats(t, &st);
	assert_int_equal(st.duplicates, 7);
	assert_int_equal(st.late, 1);
	series_table_free(t);
}

static void test_duplicate_changes_nothing(void **state)
{
	struct series_table *a = new_table(60000, 10000), *b = new_table(60000, 10000);
	struct series_out oa, ob;
	int i;

	rng_state = 3;
	for(i = 0; i < 200; i++){
		int64_t ts = 1000 + i * 7000;
		double v = 20.0 + (double)rnd(-100, 100) / 100.0;

		assert_int_equal(series_observe(a, "d", "s", ts, v, 20.5, 0, ts, &oa), IP_OK);
		assert_int_equal(series_observe(b, "d", "s", ts, v, 20.5, 0, ts, &ob), IP_OK);
		/* only a sees the retransmission, with a wild value and a later clock */
		assert_int_equal(series_observe(a, "d", "s", ts, 1e9, 0.0, 0, ts + 500000, &oa), IP_R_DUPLICATE);
		assert_int_equal(oa.n_alerts, 0);
		assert_int_equal(oa.n_aggs, 0);
		assert_false(oa.late);
		assert_false(oa.is_anomaly);
	}
	/* a second reading on each gives the very same outputs */
	assert_int_equal(series_observe(a, "d", "s", 5000000, 50.0, 20.5, 0, 5000000, &oa), IP_OK);
	assert_int_equal(series_observe(b, "d", "s", 5000000, 50.0, 20.5, 0, 5000000, &ob), IP_OK);
	assert_true(oa.zscore == ob.zscore);
	assert_int_equal(oa.n_alerts, ob.n_alerts);
	assert_int_equal(oa.n_aggs, ob.n_aggs);
	assert_true(oa.aggs[0].sum == ob.aggs[0].sum);
	series_table_free(a);
	series_table_free(b);
}

static void test_refusals(void **state)
{
	struct series_table *t = new_table(60000, 10000);
	struct series_out o;
	char longid[SERIES_NAME_MAX + 2];

	memset(longid, 'x', sizeof(longid));
	longid[SERIES_NAME_MAX + 1] = '\0';
	assert_int_equal(put(t, "", "temp", 1, 1.0, &o), IP_R_ID_INVALID);
	assert_int_equal(put(t, "d", "", 1, 1.0, &o), IP_R_ID_INVALID);
	assert_int_equal(series_observe(t, NULL, "s", 1, 1.0, NAN, 0, 1, &o), IP_R_ID_INVALID);
	assert_int_equal(put(t, longid, "temp", 1, 1.0, &o), IP_R_ID_INVALID);
	assert_int_equal(put(t, "d", "temp", 1, NAN, &o), IP_R_NON_FINITE_VALUE);
	assert_int_equal(put(t, "d", "temp", 1, -INFINITY, &o), IP_R_NON_FINITE_VALUE);
	assert_int_equal(put(t, "d", "temp", -1, 1.0, &o), IP_R_BAD_TIMESTAMP);
	assert_int_equal(put(t, "d", "temp", SERIES_TS_MAX + 1, 1.0, &o), IP_R_BAD_TIMESTAMP);
	assert_int_equal(series_count(t), 0);
	longid[SERIES_NAME_MAX] = '\0';
	assert_int_equal(put(t, longid, "temp", SERIES_TS_MAX, 1.0, &o), IP_OK);
	assert_true(isnan(o.zscore));
	assert_int_equal(series_count(t), 1);
	series_table_free(t);
}

static void test_alerts_per_series(void **state)
{
	struct series_table *t = new_table(60000, 10000);
	struct series_out o;
	int i;

	rng_state = 11;
	for(i = 0; i < 100; i++){
		double n = (double)rnd(-50, 50) / 100.0;

		series_observe(t, "a", "temp", i * 1000, 20.0 + n, 25.0, 0, i * 1000, &o);
		series_observe(t, "b", "temp", i * 1000, 20.0 + n, 25.0, 4.0, i * 1000, &o);
	}
	assert_int_equal(series_observe(t, "a", "temp", 200000, 26.0, 25.0, 0, 200000, &o), IP_OK);
	assert_int_equal(o.n_alerts, 2);
	assert_int_equal(o.alerts[0].kind, ALERT_THRESHOLD);
	assert_int_equal(o.alerts[1].kind, ALERT_ZSCORE);
	assert_true(o.alerts[1].limit == 3.0);
	assert_true(o.is_anomaly);
	/* b's state is its own: nothing firing there */
	assert_int_equal(series_observe(t, "b", "temp", 200000, 24.0, 25.0, 4.0, 200000, &o), IP_OK);
	assert_int_equal(o.n_alerts, 1);
	assert_int_equal(o.alerts[0].kind, ALERT_ZSCORE);
	assert_true(o.alerts[0].limit == 4.0);
	assert_int_equal(series_observe(t, "a", "temp", 201000, 27.0, 25.0, 0, 201000, &o), IP_OK);
	assert_int_equal(o.n_alerts, 0);
	series_table_free(t);
}

static void fill(struct series_table *t, int devices, int sensors)
{
	static const char *const names[] = {"temp", "humi", "pres", "co2x"};
	struct series_out o;
	char dev[16];
	int d, s;

	for(d = 0; d < devices; d++){
		snprintf(dev, sizeof(dev), "dev-%06d", d);
		for(s = 0; s < sensors; s++){
			assert_int_equal(series_observe(t, dev, names[s], 1700000000000 + d, (double)d, 1e9, 0,
					1700000000000 + d, &o), IP_OK);
		}
	}
}

static void test_memory_per_series(void **state)
{
	const int shapes[][2] = {{25000, 4}, {100000, 1}};
	size_t i;

	for(i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++){
		struct series_table *t = new_table(300000, 10000);
		double per;

		fill(t, shapes[i][0], shapes[i][1]);
		assert_int_equal(series_count(t), 100000);
		per = (double)series_bytes(t) / (double)series_count(t);
		printf("memory: %d devices x %d sensors: %zu bytes, %.1f bytes per series\n",
				shapes[i][0], shapes[i][1], series_bytes(t), per);
		assert_true(per <= 256.0);
		series_table_free(t);
	}
}

static void test_many_series(void **state)
{
	struct series_table *t = new_table(60000, 0);
	struct series_out o;
	char dev[16];
	int d;

	fill(t, 20000, 4);
	assert_int_equal(series_count(t), 80000);
	/* every series kept its own state: a second reading sees one sample learned */
	for(d = 0; d < 20000; d += 997){
		snprintf(dev, sizeof(dev), "dev-%06d", d);
		assert_int_equal(series_observe(t, dev, "pres", 1700000000000 + d, 0.0, NAN, 0, 1700000000001 + d, &o),
				IP_R_DUPLICATE);
		assert_int_equal(series_observe(t, dev, "pres", 1700000100000 + d, (double)d, NAN, 0, 1700000100000 + d, &o),
				IP_OK);
		assert_int_equal(o.n_aggs, 1);
		assert_int_equal(o.aggs[0].count, 1);
		assert_true(o.aggs[0].sum == (double)d);
		assert_string_equal(o.aggs[0].device_id, dev);
		assert_string_equal(o.aggs[0].sensor_id, "pres");
	}
	assert_int_equal(series_count(t), 80000);
	series_table_free(t);
}

static const char *close_one(struct series_table *t, const char *dev, const char *sensor, int64_t *ts,
		const char **sensor_ptr)
{
	struct series_out o;

	assert_int_equal(put(t, dev, sensor, *ts, 1.0, &o), IP_OK);
	*ts += 1000000;
	assert_int_equal(put(t, dev, sensor, *ts, 1.0, &o), IP_OK);
	assert_int_equal(o.n_aggs, 1);
	assert_string_equal(o.aggs[0].device_id, dev);
	assert_string_equal(o.aggs[0].sensor_id, sensor);
	if(sensor_ptr) *sensor_ptr = o.aggs[0].sensor_id;
	return o.aggs[0].device_id;
}

static void test_interned_names(void **state)
{
	struct series_table *t = new_table(60000, 10000);
	const char *d1, *d1b, *d2, *s1, *s1b, *s2;
	char buf[32];
	int64_t ts = 0;

	/* the caller's buffer is copied, never kept */
	strcpy(buf, "dev-000001");
	d1 = close_one(t, buf, "temp", &ts, &s1);
	strcpy(buf, "overwritten");
	assert_string_equal(d1, "dev-000001");
	assert_true(d1 != buf);

	/* a device's id is shared by its sensors, a sensor's by the devices */
	d1b = close_one(t, "dev-000001", "humi", &ts, NULL);
	assert_ptr_equal(d1, d1b);
	d2 = close_one(t, "dev-000002", "temp", &ts, &s2);
	assert_ptr_equal(s1, s2);
	assert_true(d1 != d2);

	/* many more series: new name chunks, index and name table regrown; old pointers still good */
	fill(t, 60000, 2);
	assert_string_equal(d1, "dev-000001");
	assert_string_equal(s1, "temp");
	ts = 1800000000000;   /* past what fill() put into dev-000001/temp */
	d1b = close_one(t, "dev-000001", "temp", &ts, &s1b);
	assert_ptr_equal(d1, d1b);
	assert_ptr_equal(s1, s1b);
	series_table_free(t);
}

/* ---- checkpoint ---- */

struct sweep_log {
	struct ip_aggregate a[4096];
	int n;
};

static void log_agg(void *ctx, const struct ip_aggregate *a)
{
	struct sweep_log *l = ctx;

	assert_true(l->n < 4096);
	l->a[l->n++] = *a;
}

static void assert_agg_equal(const struct ip_aggregate *x, const struct ip_aggregate *y)
{
	assert_string_equal(x->device_id, y->device_id);
	assert_string_equal(x->sensor_id, y->sensor_id);
	assert_int_equal(x->win_start_ms, y->win_start_ms);
	assert_int_equal(x->win_end_ms, y->win_end_ms);
	assert_int_equal(x->first_ts_ms, y->first_ts_ms);
	assert_int_equal(x->last_ts_ms, y->last_ts_ms);
	assert_int_equal(x->count, y->count);
	assert_memory_equal(&x->sum, &y->sum, sizeof(x->sum));
	assert_memory_equal(&x->min, &y->min, sizeof(x->min));
	assert_memory_equal(&x->max, &y->max, sizeof(x->max));
}

static void assert_out_equal(const struct series_out *x, const struct series_out *y)
{
	size_t i;

	assert_int_equal(x->is_anomaly, y->is_anomaly);
	assert_memory_equal(&x->zscore, &y->zscore, sizeof(x->zscore));
	assert_int_equal(x->late, y->late);
	assert_int_equal(x->n_alerts, y->n_alerts);
	for(i = 0; i < x->n_alerts; i++){
		assert_int_equal(x->alerts[i].kind, y->alerts[i].kind);
		assert_int_equal(x->alerts[i].state, y->alerts[i].state);
		assert_memory_equal(&x->alerts[i].value, &y->alerts[i].value, sizeof(double));
		assert_memory_equal(&x->alerts[i].limit, &y->alerts[i].limit, sizeof(double));
		assert_memory_equal(&x->alerts[i].score, &y->alerts[i].score, sizeof(double));
		assert_int_equal(x->alerts[i].ts_ms, y->alerts[i].ts_ms);
	}
	assert_int_equal(x->n_aggs, y->n_aggs);
	for(i = 0; i < x->n_aggs; i++) assert_agg_equal(&x->aggs[i], &y->aggs[i]);
}

struct stream {
	int64_t t, now;
	int64_t last_ts[200];
	uint64_t counts[6];         /* dups, late, alerts, aggs from readings, aggs from sweeps, anomalies */
};

/* one random event into every table given: a reading (sometimes a duplicate, out of order, late,
 * a spike) or every so often a sweep */
static void step(struct stream *st, struct series_table **tabs, int n_tabs)
{
	struct series_out out[2];
	struct sweep_log *logs[2] = {NULL, NULL};
	char dev[16], sensor[8];
	int s, i, k;

	if(rnd(0, 49) == 0){
		for(i = 0; i < n_tabs; i++){
			logs[i] = calloc(1, sizeof(*logs[i]));
			series_sweep(tabs[i], st->now, log_agg, logs[i]);
		}
		for(i = 1; i < n_tabs; i++){
			assert_int_equal(logs[i]->n, logs[0]->n);
			for(k = 0; k < logs[0]->n; k++) assert_agg_equal(&logs[i]->a[k], &logs[0]->a[k]);
		}
		st->counts[4] += (uint64_t)logs[0]->n;
		for(i = 0; i < n_tabs; i++) free(logs[i]);
		return;
	}

	s = (int)rnd(0, 199);
	/* a few devices go quiet for long stretches so the sweep has work */
	if(s >= 180 && rnd(0, 9) != 0) s -= 100;
	snprintf(dev, sizeof(dev), "dev-%06d", s / 5);
	snprintf(sensor, sizeof(sensor), "s%d", s % 5);
	st->t += rnd(0, 400);
	st->now += rnd(0, 400);
	if(rnd(0, 99) == 0) st->now -= rnd(0, 2000);      /* the processing clock steps back */

	int64_t ts = st->t - rnd(0, 8000);
	double base = 10.0 * (s % 7), v = base + (double)rnd(-1000, 1000) / 1000.0;
	double thr = (s % 3 == 0) ? NAN : base + 0.8, z = (s % 4 == 0) ? 4.0 : 0.0;

	if(rnd(0, 49) == 0) ts = st->last_ts[s];           /* retransmission */
	else if(rnd(0, 49) == 0) ts = st->t - rnd(60000, 200000);   /* late */
	if(ts < 0) ts = 0;
	if(rnd(0, 99) == 0) v += 50.0;                     /* spike */
	if(s % 11 == 0) v = base;                          /* a constant signal */
	st->last_ts[s] = ts;

	enum ip_reason rc[2];
	for(i = 0; i < n_tabs; i++) rc[i] = series_observe(tabs[i], dev, sensor, ts, v, thr, z, st->now, &out[i]);
	for(i = 1; i < n_tabs; i++){
		assert_int_equal(rc[i], rc[0]);
		if(rc[0] == IP_OK) assert_out_equal(&out[i], &out[0]);
	}
	if(rc[0] == IP_R_DUPLICATE){
		st->counts[0]++;
		return;
	}
	assert_int_equal(rc[0], IP_OK);
	st->counts[1] += out[0].late;
	st->counts[2] += out[0].n_alerts;
	st->counts[3] += out[0].n_aggs;
	st->counts[5] += out[0].is_anomaly;
}

static bool files_equal(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	bool eq = fa && fb;
	int ca, cb;

	while(eq){
		ca = fgetc(fa);
		cb = fgetc(fb);
		if(ca != cb) eq = false;
		if(ca == EOF) break;
	}
	if(fa) fclose(fa);
	if(fb) fclose(fb);
	return eq;
}

static void test_checkpoint_round_trip(void **state)
{
	struct series_table *a = new_table(60000, 10000), *b = new_table(60000, 10000);
	struct series_table *tabs[2];
	struct series_stats sa, sb;
	struct stream st;
	char path[128], pa[160], pb[160], err[256];
	int i;

	memset(&st, 0, sizeof(st));
	st.t = 1700000000000;
	st.now = 1700000005000;
	rng_state = 2024;
	tabs[0] = a;
	for(i = 0; i < 30000; i++) step(&st, tabs, 1);

	series_set_tag(a, 123456789);
	snprintf(path, sizeof(path), "%s/series.ckpt", tmpdir);
	assert_true(series_save(a, path, err, sizeof(err)));
	assert_int_equal(access(path, F_OK), 0);
	snprintf(pa, sizeof(pa), "%s.tmp", path);
	assert_int_not_equal(access(pa, F_OK), 0);
	if(!series_load(b, path, err, sizeof(err))) fail_msg("load: %s", err);
	assert_int_equal(series_count(b), series_count(a));
	assert_int_equal(series_tag(b), 123456789);
	/* load then save gives back the same bytes: nothing dropped or altered on the way */
	snprintf(pb, sizeof(pb), "%s/reload.ckpt", tmpdir);
	assert_true(series_save(b, pb, err, sizeof(err)));
	assert_true(files_equal(path, pb));

	/* the restored table answers every later event exactly as the original does, starting with
	 * a processing clock stepped far back (the restored clock must hold it) */
	memset(st.counts, 0, sizeof(st.counts));
	tabs[1] = b;
	st.now -= 100000;
	for(i = 0; i < 30000; i++) step(&st, tabs, 2);
	printf("checkpoint: %zu series; after the restore %" PRIu64 " duplicates, %" PRIu64 " late, %" PRIu64
			" alerts, %" PRIu64 " + %" PRIu64 " aggregates, %" PRIu64 " anomalies compared\n",
			series_count(a), st.counts[0], st.counts[1], st.counts[2], st.counts[3], st.counts[4], st.counts[5]);
	/* the stream really exercised what the checkpoint has to carry */
	for(i = 0; i < 6; i++) assert_true(st.counts[i] > 0);

	series_get_stats(a, &sa);
	series_get_stats(b, &sb);
	assert_memory_equal(&sa, &sb, sizeof(sa));

	/* and both now save to the same bytes */
	snprintf(pa, sizeof(pa), "%s/a.ckpt", tmpdir);
	snprintf(pb, sizeof(pb), "%s/b.ckpt", tmpdir);
	assert_true(series_save(a, pa, err, sizeof(err)));
	assert_true(series_save(b, pb, err, sizeof(err)));
	assert_true(files_equal(pa, pb));

	series_table_free(a);
	series_table_free(b);
}

/* series_write leaves the checkpoint in place until series_publish: a crash in between (the
 * processor publishes on another thread) restores the previous state */
static void test_checkpoint_write_then_publish(void **state)
{
	struct series_table *a = new_table(60000, 10000), *t;
	struct series_out o;
	char path[128], err[256];

	snprintf(path, sizeof(path), "%s/wp.ckpt", tmpdir);
	assert_int_equal(put(a, "dev-1", "temp", 1000, 1.0, &o), IP_OK);
	series_set_tag(a, 1);
	assert_true(series_save(a, path, err, sizeof(err)));
	assert_int_equal(put(a, "dev-2", "temp", 1000, 1.0, &o), IP_OK);
	series_set_tag(a, 2);
	assert_true(series_write(a, path, err, sizeof(err)));

	t = new_table(60000, 10000);
	assert_true(series_load(t, path, err, sizeof(err)));
	assert_int_equal(series_tag(t), 1);
	assert_int_equal(series_count(t), 1);
	series_table_free(t);

	assert_true(series_publish(path, err, sizeof(err)));
	t = new_table(60000, 10000);
	assert_true(series_load(t, path, err, sizeof(err)));
	assert_int_equal(series_tag(t), 2);
	assert_int_equal(series_count(t), 2);
	series_table_free(t);
	assert_false(series_publish(path, err, sizeof(err)));   /* nothing written since */
	series_table_free(a);
}

static void test_checkpoint_errors(void **state)
{
	struct series_table *a = new_table(60000, 10000), *t;
	struct series_out o;
	char path[128], other[128], err[256];
	unsigned char buf[64];
	uint64_t sum;
	FILE *f;
	long size;

	assert_int_equal(put(a, "dev-1", "temp", 1000, 1.0, &o), IP_OK);
	snprintf(path, sizeof(path), "%s/e.ckpt", tmpdir);
	assert_true(series_save(a, path, err, sizeof(err)));

	/* missing */
	t = new_table(60000, 10000);
	snprintf(other, sizeof(other), "%s/none.ckpt", tmpdir);
	assert_false(series_load(t, other, err, sizeof(err)));
	assert_non_null(strstr(err, "No such file"));

	/* another window size */
	series_table_free(t);
	t = new_table(30000, 10000);
	assert_false(series_load(t, path, err, sizeof(err)));
	assert_non_null(strstr(err, "window"));
	series_table_free(t);

	/* into a table in use */
	t = new_table(60000, 10000);
	assert_int_equal(put(t, "x", "y", 1, 1.0, &o), IP_OK);
	assert_false(series_load(t, path, err, sizeof(err)));
	series_table_free(t);

	/* one flipped byte */
	f = fopen(path, "r+b");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size / 2, SEEK_SET);
	int c = fgetc(f);
	fseek(f, size / 2, SEEK_SET);
	fputc(c ^ 0x40, f);
	fclose(f);
	t = new_table(60000, 10000);
	assert_false(series_load(t, path, err, sizeof(err)));
	assert_non_null(strstr(err, "checksum"));
	assert_int_equal(series_count(t), 0);

	/* truncated */
	assert_true(series_save(a, path, err, sizeof(err)));
	assert_int_equal(truncate(path, size - 20), 0);
	assert_false(series_load(t, path, err, sizeof(err)));

	/* right checksum, wrong content */
	memset(buf, 'z', sizeof(buf));
	sum = XXH3_64bits(buf, sizeof(buf) - sizeof(sum));
	memcpy(buf + sizeof(buf) - sizeof(sum), &sum, sizeof(sum));
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, sizeof(buf), f), sizeof(buf));
	fclose(f);
	assert_false(series_load(t, path, err, sizeof(err)));
	assert_non_null(strstr(err, "not a series checkpoint"));

	/* a failed load leaves the table usable and empty */
	assert_int_equal(series_count(t), 0);
	assert_int_equal(put(t, "dev-1", "temp", 1000, 1.0, &o), IP_OK);

	/* an unwritable place */
	assert_false(series_save(a, "/nonexistent-dir/x.ckpt", err, sizeof(err)));
	assert_true(err[0] != '\0');

	/* empty table round trip */
	series_table_free(t);
	t = new_table(60000, 10000);
	struct series_table *u = new_table(60000, 10000);
	assert_true(series_save(t, path, err, sizeof(err)));
	assert_true(series_load(u, path, err, sizeof(err)));
	assert_int_equal(series_count(u), 0);
	series_table_free(u);
	series_table_free(t);
	series_table_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_dedup),
		cmocka_unit_test(test_duplicate_changes_nothing),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_alerts_per_series),
		cmocka_unit_test(test_memory_per_series),
		cmocka_unit_test(test_many_series),
		cmocka_unit_test(test_interned_names),
		cmocka_unit_test(test_checkpoint_round_trip),
		cmocka_unit_test(test_checkpoint_write_then_publish),
		cmocka_unit_test(test_checkpoint_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
