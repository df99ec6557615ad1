#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "detect.h"

static const struct det_params P = {.z_default = 3.0, .z_min_samples = 30, .hysteresis = 0.02, .alpha = 0.02};

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: deterministic, good enough for test noise */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static double uniform(void)
{
	return (double)(rng() >> 11) / 9007199254740992.0;
}

static double gauss(void)
{
	double u = uniform(), v = uniform();

	if(u < 1e-300) u = 1e-300;
	return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static struct det_result obs(struct det_state *s, double value, double threshold, double z_limit)
{
	struct det_result r;

	det_observe(s, &P, value, threshold, z_limit, 1000, &r);
	return r;
}

/* a baseline of n gaussian samples around mean with the given sigma */
static void warm(struct det_state *s, int n, double mean, double sigma)
{
	int i;

	for(i = 0; i < n; i++) obs(s, mean + sigma * gauss(), NAN, 0);
}

static void test_threshold_hysteresis(void **state)
{
	/* threshold 25, resolve below 25 - 0.02 * 25 = 24.5 */
	const double seq[] = {20, 25, 25.1, 26, 24.9, 25.5, 24.6, 24.5, 25.2, 24.4, 24, 25.01, 30};
	const int expect[] = {0, 0, ALERT_FIRING, 0, 0, 0, 0, 0, 0, ALERT_RESOLVED, 0, ALERT_FIRING, 0};
	struct det_state s;
	struct det_result r;
	size_t i;

	det_init(&s);
	for(i = 0; i < sizeof(seq) / sizeof(seq[0]); i++){
		r = obs(&s, seq[i], 25.0, 0);
		if(!expect[i]){
			assert_int_equal(r.n_alerts, 0);
			continue;
		}
		assert_int_equal(r.n_alerts, 1);
		assert_int_equal(r.alerts[0].kind, ALERT_THRESHOLD);
		assert_int_equal(r.alerts[0].state, expect[i]);
		assert_true(r.alerts[0].value == seq[i]);
		assert_true(r.alerts[0].limit == 25.0);
		assert_true(fabs(r.alerts[0].score - (seq[i] - 25.0)) < 1e-6);
		assert_int_equal(r.alerts[0].ts_ms, 1000);
	}
}

static void test_threshold_wobble_no_storm(void **state)
{
	struct det_state s;
	struct det_result r;
	int i, firing = 0, resolved = 0;

	det_init(&s);
	/* 1000 readings wobbling +-0.4 around the threshold: one alert, no storm */
	for(i = 0; i < 1000; i++){
		r = obs(&s, 100.0 + ((i & 1) ? 0.4 : -0.4), 100.0, INFINITY);
		if(r.n_alerts) firing += r.alerts[0].state == ALERT_FIRING;
	}
	assert_int_equal(firing, 1);
	/* resolves once below 98, and only once */
	for(i = 0; i < 10; i++){
		r = obs(&s, 97.0, 100.0, INFINITY);
		if(r.n_alerts) resolved += r.alerts[0].state == ALERT_RESOLVED;
	}
	assert_int_equal(resolved, 1);
}

static void test_threshold_negative_and_none(void **state)
{
	struct det_state s;
	struct det_result r;

	det_init(&s);
	/* threshold -10: resolve below -10 - 0.02 * 10 = -10.2 */
	r = obs(&s, -9.0, -10.0, 0);
	assert_int_equal(r.n_alerts, 1);
	assert_int_equal(r.alerts[0].state, ALERT_FIRING);
	r = obs(&s, -10.1, -10.0, 0);
	assert_int_equal(r.n_alerts, 0);
	r = obs(&s, -10.3, -10.0, 0);
	assert_int_equal(r.n_alerts, 1);
	assert_int_equal(r.alerts[0].state, ALERT_RESOLVED);

	/* no threshold: nothing, and a firing state waits for the threshold to come back */
	r = obs(&s, 50.0, 0.0, 0);
	assert_int_equal(r.n_alerts, 1);
	r = obs(&s, -50.0, NAN, 0);
	assert_int_equal(r.n_alerts, 0);
	assert_int_equal(s.thr_firing, 1);
	r = obs(&s, -50.0, 0.0, 0);
	assert_int_equal(r.n_alerts, 1);
	assert_int_equal(r.alerts[0].state, ALERT_RESOLVED);

	/* zero threshold: no band, resolves strictly below 0 */
	r = obs(&s, 0.5, 0.0, 0);
	assert_int_equal(r.alerts[0].state, ALERT_FIRING);
	r = obs(&s, 0.0, 0.0, 0);
	assert_int_equal(r.n_alerts, 0);
	r = obs(&s, -0.001, 0.0, 0);
	assert_int_equal(r.alerts[0].state, ALERT_RESOLVED);

	/* the excess is the decimal difference, not the double's: 22.3 - 20 reads 2.3 */
	r = obs(&s, 22.3, 20.0, 0);
	assert_int_equal(r.alerts[0].state, ALERT_FIRING);
	assert_true(22.3 - 20.0 != 2.3);
	assert_true(r.alerts[0].score == 2.3);
	/* a huge excess is kept as it is */
	det_init(&s);
	r = obs(&s, 1e300, 0.0, 0);
	assert_true(r.alerts[0].score == 1e300);
}

static void test_zscore_min_samples(void **state)
{
	struct det_state s;
	struct det_result r;
	int i;

	rng_state = 42;
	det_init(&s);
	for(i = 0; i < 30; i++){
		/* even a wild value gets no verdict while the baseline is too young */
		r = obs(&s, i == 10 ? 1e6 : 10.0 + gauss(), NAN, 0);
		assert_true(isnan(r.zscore));
		assert_false(r.is_anomaly);
		assert_int_equal(r.n_alerts, 0);
	}
	assert_int_equal(s.n, 30);
	r = obs(&s, 10.0, NAN, 0);
	assert_false(isnan(r.zscore));
	assert_true(isfinite(r.zscore));
}

static void test_zscore_outlier_not_learned(void **state)
{
	struct det_state s, before;
	struct det_result r;

	rng_state = 7;
	det_init(&s);
	warm(&s, 500, 20.0, 0.5);
	before = s;
	r = obs(&s, 35.0, NAN, 0);
	assert_true(r.is_anomaly);
	assert_true(r.zscore > 10.0);
	/* bit for bit: the spike left no trace in the baseline */
	assert_memory_equal(&before.mean, &s.mean, sizeof(s.mean));
	assert_memory_equal(&before.mad, &s.mad, sizeof(s.mad));
	assert_int_equal(before.n, s.n);

	/* many spikes in a row (short of a level shift, see below) do not drag the baseline either */
	for(int i = 0; i < (int)P.z_min_samples - 2; i++) obs(&s, 35.0 + i, NAN, 0);
	assert_true(s.mean == before.mean);
	assert_true(s.mad == before.mad);

	/* and a normal value right after is judged against the old baseline */
	r = obs(&s, 20.2, NAN, 0);
	assert_false(r.is_anomaly);
	assert_true(fabs(r.zscore) < 3.0);
	/* the scale estimates sigma */
	assert_true(det_scale(&s) > 0.4 && det_scale(&s) < 0.6);
}

/* A real level shift (a sensor moved, a new operating point) is anomalous at first; after as many
 * flagged readings in a row as the warm-up takes, the alert resolves and the baseline starts over
 * at the new level, which is then normal. */
static void test_zscore_level_shift_relearned(void **state)
{
	struct det_state s;
	struct det_result r;
	int firing = 0, resolved = 0, i;

	rng_state = 11;
	det_init(&s);
	warm(&s, 300, 20.0, 0.5);
	for(i = 0; i < (int)P.z_min_samples; i++){
		r = obs(&s, 40.0 + (i % 3) * 0.3, NAN, 0);
		assert_true(r.is_anomaly);
		for(size_t k = 0; k < r.n_alerts; k++){
			firing += r.alerts[k].state == ALERT_FIRING;
			resolved += r.alerts[k].state == ALERT_RESOLVED;
		}
	}
	assert_int_equal(firing, 1);
	assert_int_equal(resolved, 1);
	assert_int_equal(s.z_firing, 0);
	/* relearning: no verdict until the warm-up is over, then the new level is normal */
	for(i = 0; i < (int)P.z_min_samples; i++){
		r = obs(&s, 40.0 + (i % 3) * 0.3, NAN, 0);
		assert_false(r.is_anomaly);
		assert_int_equal(r.n_alerts, 0);
	}
	r = obs(&s, 40.2, NAN, 0);
	assert_false(r.is_anomaly);
	assert_true(fabs(r.zscore) < 3.0);
	/* and the old level is now the anomaly */
	r = obs(&s, 20.0, NAN, 0);
	assert_true(r.is_anomaly);
}

static void test_zscore_constant_then_step(void **state)
{
	const double levels[] = {20.0, 0.0, -3.5, 1e9};
	struct det_state s;
	struct det_result r;
	size_t k;
	int i;

	for(k = 0; k < sizeof(levels) / sizeof(levels[0]); k++){
		det_init(&s);
		for(i = 0; i < 50; i++){
			r = obs(&s, levels[k], NAN, 0);
			assert_false(r.is_anomaly);
		}
		assert_true(r.zscore == 0.0);
		r = obs(&s, levels[k] + 0.5, NAN, 0);
		assert_true(r.is_anomaly);
		assert_true(isfinite(r.zscore));
		assert_true(r.zscore > 3.0);
		assert_int_equal(r.n_alerts, 1);
		assert_int_equal(r.alerts[0].kind, ALERT_ZSCORE);
		assert_int_equal(r.alerts[0].state, ALERT_FIRING);
		/* a step down flags as well, with the sign */
		r = obs(&s, levels[k] - 0.5, NAN, 0);
		assert_true(r.is_anomaly);
		assert_true(r.zscore < -3.0);
		assert_int_equal(r.n_alerts, 0);
		r = obs(&s, levels[k], NAN, 0);
		assert_false(r.is_anomaly);
		assert_int_equal(r.n_alerts, 1);
		assert_int_equal(r.alerts[0].state, ALERT_RESOLVED);
	}
}

static void test_zscore_per_sensor_limit(void **state)
{
	struct det_state base, s;
	struct det_result r;
	double scale, x;

	rng_state = 99;
	det_init(&base);
	warm(&base, 300, 50.0, 2.0);
	scale = det_scale(&base);
	x = base.mean + 4.0 * scale;

	s = base;
	r = obs(&s, x, NAN, 0);           /* default limit 3 */
	assert_true(r.is_anomaly);
	assert_true(fabs(r.zscore - 4.0) < 1e-9);
	assert_true(r.alerts[0].limit == 3.0);

	s = base;
	r = obs(&s, x, NAN, NAN);         /* NAN: default too */
	assert_true(r.is_anomaly);

	s = base;
	r = obs(&s, x, NAN, 5.0);         /* the sensor's anomalyZ */
	assert_false(r.is_anomaly);
	assert_int_equal(r.n_alerts, 0);

	s = base;
	r = obs(&s, base.mean + 6.0 * scale, NAN, 5.0);
	assert_true(r.is_anomaly);
	assert_true(r.alerts[0].limit == 5.0);

	s = base;
	r = obs(&s, base.mean + 1e6 * scale, NAN, INFINITY);   /* verdict off */
	assert_false(r.is_anomaly);
	assert_true(isfinite(r.zscore));

	s = base;
	r = obs(&s, base.mean + 2.5 * scale, NAN, 2.0);   /* a tighter limit */
	assert_true(r.is_anomaly);
}

static void test_alert_sequences(void **state)
{
	struct det_state s;
	struct det_result r;

	rng_state = 5;
	det_init(&s);
	warm(&s, 200, 10.0, 1.0);

	r = obs(&s, 10.0, 30.0, 0);
	assert_int_equal(r.n_alerts, 0);

	/* one reading over the threshold and far out: both alerts, threshold first */
	r = obs(&s, 40.0, 30.0, 0);
	assert_int_equal(r.n_alerts, 2);
	assert_int_equal(r.alerts[0].kind, ALERT_THRESHOLD);
	assert_int_equal(r.alerts[0].state, ALERT_FIRING);
	assert_int_equal(r.alerts[1].kind, ALERT_ZSCORE);
	assert_int_equal(r.alerts[1].state, ALERT_FIRING);
	assert_true(r.alerts[1].score == r.zscore);

	/* still both out: no storm */
	r = obs(&s, 41.0, 30.0, 0);
	assert_int_equal(r.n_alerts, 0);
	r = obs(&s, 45.0, 30.0, 0);
	assert_int_equal(r.n_alerts, 0);

	/* back to normal: z resolves at once, the threshold too (well under 29.4) */
	r = obs(&s, 10.5, 30.0, 0);
	assert_int_equal(r.n_alerts, 2);
	assert_int_equal(r.alerts[0].kind, ALERT_THRESHOLD);
	assert_int_equal(r.alerts[0].state, ALERT_RESOLVED);
	assert_int_equal(r.alerts[1].kind, ALERT_ZSCORE);
	assert_int_equal(r.alerts[1].state, ALERT_RESOLVED);
	assert_false(r.is_anomaly);

	r = obs(&s, 9.5, 30.0, 0);
	assert_int_equal(r.n_alerts, 0);

	/* an anomaly under the threshold: z alone */
	r = obs(&s, -20.0, 30.0, 0);
	assert_int_equal(r.n_alerts, 1);
	assert_int_equal(r.alerts[0].kind, ALERT_ZSCORE);
	assert_int_equal(r.alerts[0].state, ALERT_FIRING);
	r = obs(&s, 10.0, 30.0, 0);
	assert_int_equal(r.n_alerts, 1);
	assert_int_equal(r.alerts[0].state, ALERT_RESOLVED);
}

static void test_zscore_calibration_and_drift(void **state)
{
	struct det_state s;
	struct det_result r;
	int i, flagged = 0, n = 100000;

	/* on gaussian noise about 0.27 % lie beyond 3 sigma; the EWMA scale must land near that */
	rng_state = 12345;
	det_init(&s);
	for(i = 0; i < n; i++){
		r = obs(&s, 100.0 + 3.0 * gauss(), NAN, 0);
		flagged += r.is_anomaly;
	}
	printf("gaussian noise, z > 3: %.3f %% flagged\n", 100.0 * flagged / n);
	assert_true(flagged > n / 2000 && flagged < n / 100);

	/* a slow drift is followed, not flagged */
	flagged = 0;
	for(i = 0; i < 20000; i++){
		r = obs(&s, 100.0 + i * 0.001 + 3.0 * gauss(), NAN, 0);
		flagged += r.is_anomaly;
	}
	assert_true(flagged < 20000 / 100);
	assert_true(fabs(s.mean - 120.0) < 2.0);
}

static void test_huge_values_stay_finite(void **state)
{
	struct det_state s;
	struct det_result r;
	int i;

	/* deviations beyond FLT_MAX: the float mad saturates instead of turning inf */
	det_init(&s);
	for(i = 0; i < 40; i++) obs(&s, (i & 1) ? 1e307 : -1e307, NAN, 0);
	r = obs(&s, 1e307, NAN, 0);
	assert_true(isfinite(r.zscore));
	assert_true(isfinite(s.mean));
	assert_true(isfinite(det_scale(&s)));

	/* deviations beyond DBL_MAX are not learned, and a z-score overflow stays finite */
	det_init(&s);
	for(i = 0; i < 40; i++) obs(&s, -1e308, NAN, 0);
	r = obs(&s, 1e308, NAN, 0);
	assert_true(isfinite(r.zscore));
	assert_true(r.is_anomaly);
	assert_true(s.mean == -1e308);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_threshold_hysteresis),
		cmocka_unit_test(test_threshold_wobble_no_storm),
		cmocka_unit_test(test_threshold_negative_and_none),
		cmocka_unit_test(test_zscore_min_samples),
		cmocka_unit_test(test_zscore_outlier_not_learned),
		cmocka_unit_test(test_zscore_level_shift_relearned),
		cmocka_unit_test(test_zscore_constant_then_step),
		cmocka_unit_test(test_zscore_per_sensor_limit),
		cmocka_unit_test(test_alert_sequences),
		cmocka_unit_test(test_zscore_calibration_and_drift),
		cmocka_unit_test(test_huge_values_stay_finite),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
