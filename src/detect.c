#include <float.h>
#include <math.h>
#include <string.h>

#include "detect.h"

#define DET_N_MAX ((1u << 20) - 1)
#define DET_RUN_MAX ((1u << 10) - 1)

/* A constant signal has a zero deviation; without a floor its first step would divide by zero.
 * The floor sits far below any real sensor noise (1e-12 of the level, yet well above double
 * rounding at 1e-16), so a step from a constant flags with a huge but finite z while a noisy
 * signal never notices the floor. */
#define DET_SCALE_REL_FLOOR 1e-12
#define DET_SCALE_ABS_FLOOR 1e-12

void det_init(struct det_state *s)
{
	memset(s, 0, sizeof(*s));
}

double det_scale(const struct det_state *s)
{
	double scale = DET_MAD_TO_SIGMA * (double)s->mad;
	double floor_ = fabs(s->mean) * DET_SCALE_REL_FLOOR;

	if(floor_ < DET_SCALE_ABS_FLOOR) floor_ = DET_SCALE_ABS_FLOOR;
	return scale > floor_ ? scale : floor_;
}

static void det__learn(struct det_state *s, const struct det_params *p, double value)
{
	double d, a_mean, a_mad, mad;

	if(s->n == 0){
		s->mean = value;
		s->mad = 0.0f;
		s->n = 1;
		return;
	}
	d = value - s->mean;
	/* an overflowed deviation would turn the mean into inf and then NaN for good */
	if(!isfinite(d)) return;

	/* Until 1/n drops below alpha these are the plain running means, so the first samples do
	 * not weigh in with the tiny EWMA weight against an arbitrary starting point. */
	a_mean = 1.0 / ((double)s->n + 1.0);
	if(a_mean < p->alpha) a_mean = p->alpha;
	a_mad = 1.0 / (double)s->n;
	if(a_mad < p->alpha) a_mad = p->alpha;

	s->mean += a_mean * d;
	mad = (double)s->mad + a_mad * (fabs(d) - (double)s->mad);
	if(mad > FLT_MAX) mad = FLT_MAX;
	s->mad = (float)mad;
	if(s->n < DET_N_MAX) s->n++;
}

static void det__alert(struct det_result *r, enum alert_kind kind, enum alert_state state,
		double value, double limit, double score, int64_t ts_ms)
{
	struct ip_alert *a = &r->alerts[r->n_alerts++];

	a->kind = kind;
	a->state = state;
	a->value = value;
	a->limit = limit;
	a->score = score;
	a->ts_ms = ts_ms;
}

/* x to the given number of decimals (scale = 10^decimals): the digits past that are noise, and
 * short numbers are cheap to print. Huge values are left alone (x * scale would overflow). */
static double det__round(double x, double scale)
{
	return fabs(x) < 1e12 ? round(x * scale) / scale : x;
}

static void det__threshold(struct det_state *s, const struct det_params *p, double value,
		double threshold, int64_t ts_ms, struct det_result *r)
{
	if(isnan(threshold)) return;

	if(!s->thr_firing){
		if(value > threshold){
			s->thr_firing = 1;
			/* the excess over the threshold, to 6 decimals: 22.3 - 20 is 2.3, not 2.3000000000000007 */
			det__alert(r, ALERT_THRESHOLD, ALERT_FIRING, value, threshold, det__round(value - threshold, 1e6), ts_ms);
		}
		return;
	}
	/* the band below the threshold is what keeps a value wobbling around it from storming */
	if(value < threshold - p->hysteresis * fabs(threshold)){
		s->thr_firing = 0;
		det__alert(r, ALERT_THRESHOLD, ALERT_RESOLVED, value, threshold, det__round(value - threshold, 1e6), ts_ms);
	}
}

void det_observe(struct det_state *s, const struct det_params *p, double value, double threshold,
		double z_limit, int64_t ts_ms, struct det_result *r)
{
	double limit, z;

	r->is_anomaly = false;
	r->zscore = NAN;
	r->n_alerts = 0;

	det__threshold(s, p, value, threshold, ts_ms, r);

	if(s->n < p->z_min_samples || s->n < 2){
		det__learn(s, p, value);
		return;
	}

	limit = z_limit > 0.0 ? z_limit : p->z_default;   /* NAN compares false: default */
	z = (value - s->mean) / det_scale(s);
	/* readings near DBL_MAX apart overflow; records cannot carry an infinity */
	if(!isfinite(z)) z = copysign(DBL_MAX, value - s->mean);
	r->is_anomaly = fabs(z) > limit;
	z = det__round(z, 1e4);
	r->zscore = z;

	if(r->is_anomaly){
		if(!s->z_firing){
			s->z_firing = 1;
			det__alert(r, ALERT_ZSCORE, ALERT_FIRING, value, limit, z, ts_ms);
		}
		if(s->run < DET_RUN_MAX) s->run++;
		/* Never learning what is flagged would keep a real level shift (a sensor moved, a new
		 * operating point) anomalous forever: after as many flagged readings in a row as the warm-up
		 * takes, the anomaly has become the normal, so the alert resolves and the baseline starts over. */
		unsigned relearn = p->z_min_samples < DET_RUN_MAX ? p->z_min_samples : DET_RUN_MAX;
		if(s->run >= relearn){
			s->z_firing = 0;
			s->run = 0;
			s->n = 0;
			det__alert(r, ALERT_ZSCORE, ALERT_RESOLVED, value, limit, z, ts_ms);
			det__learn(s, p, value);
		}
		return;   /* otherwise never learn what we flag */
	}
	s->run = 0;
	if(s->z_firing){
		s->z_firing = 0;
		det__alert(r, ALERT_ZSCORE, ALERT_RESOLVED, value, limit, z, ts_ms);
	}
	det__learn(s, p, value);
}
