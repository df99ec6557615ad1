/* Per-series detectors: a threshold with hysteresis and a robust z-score. Pure functions over a
 * 16-byte state, so the series table can keep one per (device, sensor) and checkpoint it as is. */
#ifndef IOTPIPE_DETECT_H
#define IOTPIPE_DETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum alert_kind { ALERT_THRESHOLD = 1, ALERT_ZSCORE = 2 };
enum alert_state { ALERT_FIRING = 1, ALERT_RESOLVED = 2 };

/* THRESHOLD: limit = the threshold, score = value - threshold.
 * ZSCORE: limit = the z limit in force, score = the reading's z-score. Always finite. */
struct ip_alert {
	enum alert_kind kind;
	enum alert_state state;
	double value, limit, score;
	int64_t ts_ms;              /* the reading's event time */
};

struct det_params {
	double z_default;           /* > 0: z limit when the caller passes none */
	uint32_t z_min_samples;     /* >= 2: samples in the baseline before any verdict */
	double hysteresis;          /* >= 0: fraction of |threshold| below it needed to resolve */
	double alpha;               /* (0, 1]: EWMA weight of a new sample once warmed up */
};

/* sigma of a normal distribution = sqrt(pi/2) * its mean absolute deviation */
#define DET_MAD_TO_SIGMA 1.2533141373155003

/* The baseline is an EWMA of the value (double: a float mean would freeze on large-offset signals
 * such as cumulative meters, whose steps fall below a float ulp) and an EWMA of the absolute
 * deviation from it (float: only its magnitude matters). We chose EWMAs over a windowed Welford
 * because they need no sample ring (a 30-sample window alone would blow the 256-byte series
 * budget), follow slow drift, and an absolute deviation is far less swayed by a rare large error
 * than a variance. Flagged values are never learned, so a spike cannot widen the scale that
 * should have caught the next one. */
struct det_state {
	double mean;
	float mad;
	unsigned int n : 20;        /* samples learned, saturating */
	unsigned int run : 10;      /* consecutive readings flagged, saturating */
	unsigned int thr_firing : 1;
	unsigned int z_firing : 1;
};

struct det_result {
	bool is_anomaly;
	double zscore;              /* NAN before z_min_samples; rounded to 4 decimals */
	size_t n_alerts;
	struct ip_alert alerts[2];  /* threshold first, then z-score */
};

/* processor thread */
void det_init(struct det_state *s);

/* processor thread: judges one reading and learns it unless flagged. threshold NAN = no threshold
 * (a firing threshold alert then stays as it is); z_limit <= 0 or NAN = p->z_default, INFINITY turns
 * the z-score verdict off for the sensor. */
void det_observe(struct det_state *s, const struct det_params *p, double value, double threshold,
		double z_limit, int64_t ts_ms, struct det_result *r);

/* processor thread: the scale a z-score divides by, never zero (see det_observe) */
double det_scale(const struct det_state *s);

#endif
