#include <stdbool.h>
#include <string.h>

#include "window.h"

void win_init(struct win_state *w)
{
	memset(w, 0, sizeof(*w));
	w->cur_start = INT64_MIN;
	w->closed_until = INT64_MIN;
	w->max_ts = INT64_MIN;
}

int64_t win_align(int64_t ts_ms, int64_t window_ms)
{
	int64_t r = ts_ms % window_ms;

	if(r < 0) r += window_ms;
	return ts_ms - r;
}

static void win__clear(struct win_state *w, int i)
{
	w->count[i] = 0;
	w->sum[i] = 0.0;
	w->min[i] = 0.0;
	w->max[i] = 0.0;
	w->first_off[i] = 0;
	w->last_off[i] = 0;
}

static void win__move(struct win_state *w, int to, int from)
{
	w->count[to] = w->count[from];
	w->sum[to] = w->sum[from];
	w->min[to] = w->min[from];
	w->max[to] = w->max[from];
	w->first_off[to] = w->first_off[from];
	w->last_off[to] = w->last_off[from];
	win__clear(w, from);
}

/* emits slot i (window starting at start) if it holds anything, then empties it */
static size_t win__emit(struct win_state *w, const struct win_params *p, int i, int64_t start,
		struct ip_aggregate *out)
{
	if(w->count[i] == 0) return 0;

	out->device_id = NULL;
	out->sensor_id = NULL;
	out->win_start_ms = start;
	out->win_end_ms = start + p->window_ms;
	out->first_ts_ms = start + w->first_off[i];
	out->last_ts_ms = start + w->last_off[i];
	out->count = w->count[i];
	out->sum = w->sum[i];
	out->min = w->min[i];
	out->max = w->max[i];
	win__clear(w, i);
	return 1;
}

/* closes both slots up to boundary (an aligned window end), oldest first */
static size_t win__close_upto(struct win_state *w, const struct win_params *p, int64_t boundary,
		struct ip_aggregate out[2])
{
	size_t n = 0;

	if(w->max_ts == INT64_MIN) return 0;
	if(w->cur_start <= boundary){
		n += win__emit(w, p, WIN_PREV, w->cur_start - p->window_ms, &out[n]);
	}
	if(w->cur_start + p->window_ms <= boundary){
		n += win__emit(w, p, WIN_CUR, w->cur_start, &out[n]);
	}
	return n;
}

static void win__fold(struct win_state *w, int i, uint32_t off, double value)
{
	if(w->count[i] == 0){
		w->sum[i] = value;
		w->min[i] = value;
		w->max[i] = value;
		w->first_off[i] = off;
		w->last_off[i] = off;
		w->count[i] = 1;
		return;
	}
	w->sum[i] += value;
	if(value < w->min[i]) w->min[i] = value;
	if(value > w->max[i]) w->max[i] = value;
	if(off < w->first_off[i]) w->first_off[i] = off;
	if(off > w->last_off[i]) w->last_off[i] = off;
	w->count[i]++;
}

size_t win_observe(struct win_state *w, const struct win_params *p, int64_t ts_ms, double value,
		bool *late, struct ip_aggregate out[2])
{
	int64_t start = win_align(ts_ms, p->window_ms);
	int64_t boundary;
	size_t n = 0;
	int slot;

	*late = false;
	if(ts_ms < w->closed_until){
		*late = true;
		return 0;
	}

	if(ts_ms > w->max_ts){
		/* Only a new max moves the watermark. Close what it passed before shifting the slots, so
		 * the emitted windows are read from the slots they were folded into. */
		boundary = win_align(ts_ms - p->lateness_ms, p->window_ms);
		if(boundary > w->closed_until){
			n = win__close_upto(w, p, boundary, out);
			w->closed_until = boundary;
		}
		if(w->max_ts == INT64_MIN || start > w->cur_start){
			if(w->max_ts != INT64_MIN && start == w->cur_start + p->window_ms){
				win__move(w, WIN_PREV, WIN_CUR);
			}else{
				/* a jump of two windows or more: both slots were closed just above */
				win__clear(w, WIN_PREV);
				win__clear(w, WIN_CUR);
			}
			w->cur_start = start;
		}
		w->max_ts = ts_ms;
	}

	if(start == w->cur_start){
		slot = WIN_CUR;
	}else if(start == w->cur_start - p->window_ms){
		slot = WIN_PREV;
	}else{
		/* unreachable with lateness <= window (closed_until >= cur_start - window); a corrupt
		 * checkpoint must not make us write outside the slots */
		*late = true;
		return n;
	}
	win__fold(w, slot, (uint32_t)(ts_ms - start), value);
	return n;
}

size_t win_flush(struct win_state *w, const struct win_params *p, struct ip_aggregate out[2])
{
	int64_t end;
	size_t n;

	if(w->max_ts == INT64_MIN) return 0;
	end = w->cur_start + p->window_ms;
	n = win__close_upto(w, p, end, out);
	if(end > w->closed_until) w->closed_until = end;
	return n;
}

bool win_has_open(const struct win_state *w)
{
	return w->count[WIN_CUR] != 0 || w->count[WIN_PREV] != 0;
}
