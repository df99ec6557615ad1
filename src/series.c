#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "series.h"

/* Entries live in fixed chunks so they never move (no realloc copy, no doubling slack) and are
 * addressed by a 32-bit index: the index table and the sweep list then cost 4 bytes a link
 * instead of a pointer's 8, and UT_hash_handle's 56 bytes are avoided altogether. */
#define SERIES_CHUNK_SHIFT 9
#define SERIES_CHUNK (1u << SERIES_CHUNK_SHIFT)

/* Interned names are packed NUL-terminated into 64 KiB chunks and named by a 32-bit ref
 * (chunk << 16 | offset): no per-name malloc header, and pointers stay valid as chunks are added. */
#define NAME_CHUNK_SHIFT 16
#define NAME_CHUNK (1u << NAME_CHUNK_SHIFT)
#define NAME_CHUNKS_MAX 65535u      /* keeps ref + 1 (the index slot encoding) from wrapping */

#define NIL UINT32_MAX
#define INDEX_MIN 64u
#define ALLOC_OVERHEAD 16           /* glibc's chunk header and rounding, per malloc block */

#define CKPT_MAGIC "IPSERIES"
#define CKPT_VERSION 2u   /* 2: the detector keeps its run of flagged readings */
#define CKPT_ENDIAN 0x01020304u

struct series {
	uint64_t key;               /* XXH3 of device "\0" sensor */
	int64_t seen_ms;            /* processing time of the last reading */
	int64_t dedup[SERIES_DEDUP_DEPTH];   /* last event times, most recent first; INT64_MIN = none */
	struct det_state det;
	struct win_state win;
	uint32_t dev, sensor;       /* name refs */
	uint32_t prev, next;        /* sweep list by seen_ms; NIL at the ends and when off it */
};

_Static_assert(sizeof(struct series) <= 176, "series entry outgrew its memory budget");

struct series_table {
	struct series_params p;
	struct det_params dp;
	struct win_params wp;
	int64_t clock;              /* largest processing time seen */
	uint64_t tag;
	struct series_stats stats;

	struct series **chunks;
	uint32_t chunks_cap, n_chunks;
	uint32_t count;

	uint32_t *index;            /* entry index + 1, 0 = free; linear probing, no deletes */
	uint32_t index_cap;         /* power of two */

	char **name_chunks;
	uint32_t name_chunks_cap, n_name_chunks;
	uint32_t name_used;         /* bytes used in the last name chunk */
	uint32_t *names;            /* name ref + 1, 0 = free */
	uint32_t names_cap, n_names;

	uint32_t head, tail;        /* sweep list: oldest seen_ms first */
};

static void series__err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void series__err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if(!err || errlen == 0) return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static inline struct series *series__at(const struct series_table *t, uint32_t idx)
{
	return &t->chunks[idx >> SERIES_CHUNK_SHIFT][idx & (SERIES_CHUNK - 1)];
}

static inline const char *series__name(const struct series_table *t, uint32_t ref)
{
	return t->name_chunks[ref >> NAME_CHUNK_SHIFT] + (ref & (NAME_CHUNK - 1));
}

static uint64_t series__key(const char *dev, size_t dlen, const char *sensor, size_t slen)
{
	char buf[2 * (SERIES_NAME_MAX + 1)];

	memcpy(buf, dev, dlen);
	buf[dlen] = '\0';
	memcpy(buf + dlen + 1, sensor, slen);
	return XXH3_64bits(buf, dlen + 1 + slen);
}

/* ---- parameters ---- */

void series_params_default(struct series_params *p)
{
	p->window_ms = SERIES_DEFAULT_WINDOW_MS;
	p->lateness_ms = SERIES_DEFAULT_LATENESS_MS;
	p->z_default = SERIES_DEFAULT_Z;
	p->z_min_samples = SERIES_DEFAULT_Z_MIN_SAMPLES;
	p->hysteresis = SERIES_DEFAULT_HYSTERESIS;
	p->ewma_alpha = SERIES_DEFAULT_EWMA_ALPHA;
}

static bool series__params_ok(const struct series_params *p)
{
	if(p->window_ms < 1 || p->window_ms > (int64_t)UINT32_MAX) return false;
	if(p->lateness_ms < 0) return false;
	if(!(p->z_default > 0.0)) return false;
	if(p->z_min_samples < 2) return false;
	if(!(p->hysteresis >= 0.0) || !isfinite(p->hysteresis)) return false;
	if(p->ewma_alpha != 0.0 && !(p->ewma_alpha > 0.0 && p->ewma_alpha <= 1.0)) return false;
	return true;
}

/* ---- table ---- */

struct series_table *series_table_new(const struct series_params *p)
{
	struct series_table *t;

	if(!p || !series__params_ok(p)) return NULL;
	t = calloc(1, sizeof(*t));
	if(!t) return NULL;

	t->p = *p;
	/* lateness beyond one window would need a third open window per series */
	if(t->p.lateness_ms > t->p.window_ms) t->p.lateness_ms = t->p.window_ms;
	/* a zero alpha is a field the caller did not know about, not a frozen baseline */
	if(t->p.ewma_alpha == 0.0) t->p.ewma_alpha = SERIES_DEFAULT_EWMA_ALPHA;

	t->dp.z_default = t->p.z_default;
	t->dp.z_min_samples = t->p.z_min_samples;
	t->dp.hysteresis = t->p.hysteresis;
	t->dp.alpha = t->p.ewma_alpha;
	t->wp.window_ms = t->p.window_ms;
	t->wp.lateness_ms = t->p.lateness_ms;
	t->clock = INT64_MIN;
	t->head = NIL;
	t->tail = NIL;

	t->index = calloc(INDEX_MIN, sizeof(*t->index));
	t->names = calloc(INDEX_MIN, sizeof(*t->names));
	if(!t->index || !t->names){
		series_table_free(t);
		return NULL;
	}
	t->index_cap = INDEX_MIN;
	t->names_cap = INDEX_MIN;
	return t;
}

void series_table_free(struct series_table *t)
{
	uint32_t i;

	if(!t) return;
	for(i = 0; i < t->n_chunks; i++) free(t->chunks[i]);
	free(t->chunks);
	for(i = 0; i < t->n_name_chunks; i++) free(t->name_chunks[i]);
	free(t->name_chunks);
	free(t->index);
	free(t->names);
	free(t);
}

size_t series_count(const struct series_table *t)
{
	return t->count;
}

size_t series_bytes(const struct series_table *t)
{
	size_t b = sizeof(*t) + ALLOC_OVERHEAD;

	b += (size_t)t->index_cap * sizeof(*t->index) + ALLOC_OVERHEAD;
	b += (size_t)t->names_cap * sizeof(*t->names) + ALLOC_OVERHEAD;
	if(t->chunks){
		b += (size_t)t->chunks_cap * sizeof(*t->chunks) + ALLOC_OVERHEAD;
		b += (size_t)t->n_chunks * (SERIES_CHUNK * sizeof(struct series) + ALLOC_OVERHEAD);
	}
	if(t->name_chunks){
		b += (size_t)t->name_chunks_cap * sizeof(*t->name_chunks) + ALLOC_OVERHEAD;
		b += (size_t)t->n_name_chunks * (NAME_CHUNK + ALLOC_OVERHEAD);
	}
	return b;
}

void series_get_stats(const struct series_table *t, struct series_stats *s)
{
	*s = t->stats;
}

void series_set_tag(struct series_table *t, uint64_t tag)
{
	t->tag = tag;
}

uint64_t series_tag(const struct series_table *t)
{
	return t->tag;
}

/* ---- interned names ---- */

static bool names__grow(struct series_table *t)
{
	uint32_t cap = t->names_cap * 2, mask = cap - 1, i, j;
	uint32_t *n;

	if(cap < t->names_cap) return false;
	n = calloc(cap, sizeof(*n));
	if(!n) return false;
	for(i = 0; i < t->names_cap; i++){
		const char *s;

		if(!t->names[i]) continue;
		s = series__name(t, t->names[i] - 1);
		for(j = (uint32_t)XXH3_64bits(s, strlen(s)) & mask; n[j]; j = (j + 1) & mask);
		n[j] = t->names[i];
	}
	free(t->names);
	t->names = n;
	t->names_cap = cap;
	return true;
}

static bool names__store(struct series_table *t, const char *s, size_t len, uint32_t *ref)
{
	if(t->n_name_chunks == 0 || t->name_used + len + 1 > NAME_CHUNK){
		char *c;

		if(t->n_name_chunks >= NAME_CHUNKS_MAX) return false;
		if(t->n_name_chunks == t->name_chunks_cap){
			uint32_t cap = t->name_chunks_cap ? t->name_chunks_cap * 2 : 4;
			char **nc = realloc(t->name_chunks, cap * sizeof(*nc));

			if(!nc) return false;
			t->name_chunks = nc;
			t->name_chunks_cap = cap;
		}
		c = malloc(NAME_CHUNK);
		if(!c) return false;
		t->name_chunks[t->n_name_chunks++] = c;
		t->name_used = 0;
	}
	*ref = ((t->n_name_chunks - 1) << NAME_CHUNK_SHIFT) | t->name_used;
	memcpy(t->name_chunks[t->n_name_chunks - 1] + t->name_used, s, len);
	t->name_chunks[t->n_name_chunks - 1][t->name_used + len] = '\0';
	t->name_used += (uint32_t)len + 1;
	return true;
}

/* one copy per distinct string: a device's id is shared by its sensors, "temp" by every device */
static bool names__intern(struct series_table *t, const char *s, size_t len, uint32_t *ref)
{
	uint64_t h = XXH3_64bits(s, len);
	uint32_t mask = t->names_cap - 1, i;

	for(i = (uint32_t)h & mask; t->names[i]; i = (i + 1) & mask){
		if(!strcmp(series__name(t, t->names[i] - 1), s)){
			*ref = t->names[i] - 1;
			return true;
		}
	}
	if((uint64_t)(t->n_names + 1) * 4 > (uint64_t)t->names_cap * 3){
		if(!names__grow(t)) return false;
		mask = t->names_cap - 1;
		for(i = (uint32_t)h & mask; t->names[i]; i = (i + 1) & mask);
	}
	if(!names__store(t, s, len, ref)) return false;
	t->names[i] = *ref + 1;
	t->n_names++;
	return true;
}

/* ---- index ---- */

static bool index__grow(struct series_table *t)
{
	uint32_t cap = t->index_cap * 2, mask = cap - 1, idx, j;
	uint32_t *n;

	if(cap < t->index_cap) return false;
	n = calloc(cap, sizeof(*n));
	if(!n) return false;
	for(idx = 0; idx < t->count; idx++){
		for(j = (uint32_t)series__at(t, idx)->key & mask; n[j]; j = (j + 1) & mask);
		n[j] = idx + 1;
	}
	free(t->index);
	t->index = n;
	t->index_cap = cap;
	return true;
}

/* the 64-bit key alone would merge two series on a collision; the names settle it */
static struct series *series__find(const struct series_table *t, uint64_t key, const char *dev,
		const char *sensor, uint32_t *idx_out)
{
	uint32_t mask = t->index_cap - 1, i;

	for(i = (uint32_t)key & mask; t->index[i]; i = (i + 1) & mask){
		struct series *s = series__at(t, t->index[i] - 1);

		if(s->key == key && !strcmp(series__name(t, s->dev), dev)
				&& !strcmp(series__name(t, s->sensor), sensor)){
			*idx_out = t->index[i] - 1;
			return s;
		}
	}
	return NULL;
}

static struct series *series__create(struct series_table *t, uint64_t key, const char *dev, size_t dlen,
		const char *sensor, size_t slen, uint32_t *idx_out)
{
	uint32_t dref, sref, idx, mask, i, k;
	struct series *s;

	if(t->count >= NIL - 1) return NULL;
	if((uint64_t)(t->count + 1) * 4 > (uint64_t)t->index_cap * 3 && !index__grow(t)) return NULL;
	if(!names__intern(t, dev, dlen, &dref)) return NULL;
	if(!names__intern(t, sensor, slen, &sref)) return NULL;

	if(t->count == t->n_chunks << SERIES_CHUNK_SHIFT){
		struct series *c;

		if(t->n_chunks == t->chunks_cap){
			uint32_t cap = t->chunks_cap ? t->chunks_cap * 2 : 4;
			struct series **nc = realloc(t->chunks, cap * sizeof(*nc));

			if(!nc) return NULL;
			t->chunks = nc;
			t->chunks_cap = cap;
		}
		c = malloc(SERIES_CHUNK * sizeof(*c));
		if(!c) return NULL;
		t->chunks[t->n_chunks++] = c;
	}

	idx = t->count++;
	s = series__at(t, idx);
	memset(s, 0, sizeof(*s));
	s->key = key;
	s->seen_ms = INT64_MIN;
	for(k = 0; k < SERIES_DEDUP_DEPTH; k++) s->dedup[k] = INT64_MIN;
	det_init(&s->det);
	win_init(&s->win);
	s->dev = dref;
	s->sensor = sref;
	s->prev = NIL;
	s->next = NIL;

	mask = t->index_cap - 1;
	for(i = (uint32_t)key & mask; t->index[i]; i = (i + 1) & mask);
	t->index[i] = idx + 1;
	*idx_out = idx;
	return s;
}

/* ---- sweep list ---- */

static bool list__linked(const struct series_table *t, uint32_t idx, const struct series *s)
{
	return s->prev != NIL || t->head == idx;
}

static void list__unlink(struct series_table *t, struct series *s)
{
	if(s->prev != NIL) series__at(t, s->prev)->next = s->next;
	else t->head = s->next;
	if(s->next != NIL) series__at(t, s->next)->prev = s->prev;
	else t->tail = s->prev;
	s->prev = NIL;
	s->next = NIL;
}

static void list__append(struct series_table *t, uint32_t idx, struct series *s)
{
	s->prev = t->tail;
	s->next = NIL;
	if(t->tail != NIL) series__at(t, t->tail)->next = idx;
	else t->head = idx;
	t->tail = idx;
}

/* seen_ms only grows (the clock is clamped), so moving to the tail keeps the list sorted */
static void list__touch(struct series_table *t, uint32_t idx, struct series *s)
{
	if(t->tail == idx) return;
	if(list__linked(t, idx, s)) list__unlink(t, s);
	list__append(t, idx, s);
}

/* ---- processing ---- */

static void series__name_aggs(const struct series_table *t, const struct series *s,
		struct ip_aggregate *a, size_t n)
{
	size_t i;

	for(i = 0; i < n; i++){
		a[i].device_id = series__name(t, s->dev);
		a[i].sensor_id = series__name(t, s->sensor);
	}
}

enum ip_reason series_observe(struct series_table *t, const char *device_id, const char *sensor_id,
		int64_t ts_ms, double value, double threshold, double z_limit, int64_t now_ms, struct series_out *out)
{
	struct det_result dr;
	struct series *s;
	size_t dlen, slen, i;
	uint64_t key;
	uint32_t idx;

	out->is_anomaly = false;
	out->zscore = NAN;
	out->late = false;
	out->n_alerts = 0;
	out->n_aggs = 0;

	if(!device_id || !sensor_id) return IP_R_ID_INVALID;
	dlen = strnlen(device_id, SERIES_NAME_MAX + 1);
	slen = strnlen(sensor_id, SERIES_NAME_MAX + 1);
	if(dlen == 0 || dlen > SERIES_NAME_MAX || slen == 0 || slen > SERIES_NAME_MAX) return IP_R_ID_INVALID;
	/* a NaN would poison a window's sum and a baseline for good */
	if(!isfinite(value)) return IP_R_NON_FINITE_VALUE;
	if(ts_ms < 0 || ts_ms > SERIES_TS_MAX) return IP_R_BAD_TIMESTAMP;

	key = series__key(device_id, dlen, sensor_id, slen);
	s = series__find(t, key, device_id, sensor_id, &idx);
	if(s){
		for(i = 0; i < SERIES_DEDUP_DEPTH; i++){
			if(s->dedup[i] == ts_ms){
				t->stats.duplicates++;
				return IP_R_DUPLICATE;
			}
		}
	}else{
		s = series__create(t, key, device_id, dlen, sensor_id, slen, &idx);
		if(!s){
			t->stats.nomem++;
			return IP_OK;
		}
	}
	if(now_ms > t->clock) t->clock = now_ms;

	det_observe(&s->det, &t->dp, value, threshold, z_limit, ts_ms, &dr);
	out->is_anomaly = dr.is_anomaly;
	out->zscore = dr.zscore;
	for(i = 0; i < dr.n_alerts; i++) out->alerts[i] = dr.alerts[i];
	out->n_alerts = dr.n_alerts;

	out->n_aggs = win_observe(&s->win, &t->wp, ts_ms, value, &out->late, out->aggs);
	series__name_aggs(t, s, out->aggs, out->n_aggs);
	if(out->late) t->stats.late++;

	memmove(&s->dedup[1], &s->dedup[0], (SERIES_DEDUP_DEPTH - 1) * sizeof(s->dedup[0]));
	s->dedup[0] = ts_ms;
	s->seen_ms = t->clock;
	list__touch(t, idx, s);
	return IP_OK;
}

void series_sweep(struct series_table *t, int64_t now_ms,
		void (*emit)(void *ctx, const struct ip_aggregate *a), void *ctx)
{
	int64_t quiet = t->wp.window_ms + t->wp.lateness_ms;
	struct ip_aggregate aggs[2];
	size_t n, i;

	if(now_ms > t->clock) t->clock = now_ms;
	if(t->clock < INT64_MIN + quiet) return;

	while(t->head != NIL){
		struct series *s = series__at(t, t->head);

		if(s->seen_ms > t->clock - quiet) break;
		list__unlink(t, s);
		n = win_flush(&s->win, &t->wp, aggs);
		series__name_aggs(t, s, aggs, n);
		for(i = 0; i < n; i++){
			if(emit) emit(ctx, &aggs[i]);
		}
	}
}

/* ---- checkpoint ---- */

/* Native byte order, field by field (no struct padding on disk), an XXH3 of everything before it
 * last. A checkpoint is read back by the same build on the same machine; the endian marker
 * and the version catch the rest. */

struct ckpt_w {
	FILE *f;
	XXH3_state_t *h;
	bool ok;
};

static void w__bytes(struct ckpt_w *w, const void *p, size_t n)
{
	if(!w->ok) return;
	if(fwrite(p, 1, n, w->f) != n){
		w->ok = false;
		return;
	}
	XXH3_64bits_update(w->h, p, n);
}

static void w__u8(struct ckpt_w *w, uint8_t v) { w__bytes(w, &v, sizeof(v)); }
static void w__u16(struct ckpt_w *w, uint16_t v) { w__bytes(w, &v, sizeof(v)); }
static void w__u32(struct ckpt_w *w, uint32_t v) { w__bytes(w, &v, sizeof(v)); }
static void w__u64(struct ckpt_w *w, uint64_t v) { w__bytes(w, &v, sizeof(v)); }
static void w__i64(struct ckpt_w *w, int64_t v) { w__bytes(w, &v, sizeof(v)); }
static void w__f32(struct ckpt_w *w, float v) { w__bytes(w, &v, sizeof(v)); }
static void w__f64(struct ckpt_w *w, double v) { w__bytes(w, &v, sizeof(v)); }

static void w__name(struct ckpt_w *w, const char *s)
{
	size_t len = strlen(s);

	w__u16(w, (uint16_t)len);
	w__bytes(w, s, len);
}

static void w__series(struct ckpt_w *w, const struct series_table *t, const struct series *s)
{
	int i;

	w__name(w, series__name(t, s->dev));
	w__name(w, series__name(t, s->sensor));
	w__i64(w, s->seen_ms);
	for(i = 0; i < SERIES_DEDUP_DEPTH; i++) w__i64(w, s->dedup[i]);

	w__f64(w, s->det.mean);
	w__f32(w, s->det.mad);
	w__u32(w, s->det.n);
	w__u8(w, (uint8_t)(s->det.thr_firing | (s->det.z_firing << 1)));
	w__u32(w, s->det.run);

	w__i64(w, s->win.cur_start);
	w__i64(w, s->win.closed_until);
	w__i64(w, s->win.max_ts);
	for(i = 0; i < 2; i++){
		w__f64(w, s->win.sum[i]);
		w__f64(w, s->win.min[i]);
		w__f64(w, s->win.max[i]);
		w__u32(w, s->win.count[i]);
		w__u32(w, s->win.first_off[i]);
		w__u32(w, s->win.last_off[i]);
	}
}

/* open, fsync, close: flags O_RDONLY for a file, with O_DIRECTORY for a directory */
static bool series__fsync_path(const char *path, int flags, char *err, size_t errlen)
{
	int fd = open(path, flags | O_CLOEXEC);
	if(fd < 0){
		series__err(err, errlen, "open %s: %s", path, strerror(errno));
		return false;
	}
	bool ok = fsync(fd) == 0;
	if(!ok) series__err(err, errlen, "fsync %s: %s", path, strerror(errno));
	close(fd);
	return ok;
}

static bool series__fsync_dir(const char *path, char *err, size_t errlen)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');

	if(!slash){
		strcpy(dir, ".");
	}else if(slash == path){
		strcpy(dir, "/");
	}else{
		if((size_t)(slash - path) >= sizeof(dir)){
			series__err(err, errlen, "checkpoint path too long");
			return false;
		}
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
	}
	return series__fsync_path(dir, O_RDONLY | O_DIRECTORY, err, errlen);
}

static bool series__tmp_path(const char *path, char *tmp, size_t cap, char *err, size_t errlen)
{
	if(snprintf(tmp, cap, "%s.tmp", path) < (int)cap) return true;
	series__err(err, errlen, "checkpoint path too long");
	return false;
}

bool series_write(const struct series_table *t, const char *path, char *err, size_t errlen)
{
	struct ckpt_w w = {.ok = true};
	char tmp[4096];
	uint32_t idx, n_list;
	uint64_t sum;
	int fd;

	if(!series__tmp_path(path, tmp, sizeof(tmp), err, errlen)) return false;
	w.h = XXH3_createState();
	if(!w.h || XXH3_64bits_reset(w.h) != XXH_OK){
		series__err(err, errlen, "out of memory");
		XXH3_freeState(w.h);
		return false;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if(fd < 0){
		series__err(err, errlen, "open %s: %s", tmp, strerror(errno));
		XXH3_freeState(w.h);
		return false;
	}
	w.f = fdopen(fd, "wb");
	if(!w.f){
		series__err(err, errlen, "fdopen %s: %s", tmp, strerror(errno));
		close(fd);
		goto failed;
	}

	w__bytes(&w, CKPT_MAGIC, 8);
	w__u32(&w, CKPT_VERSION);
	w__u32(&w, CKPT_ENDIAN);
	w__i64(&w, t->wp.window_ms);
	w__i64(&w, t->wp.lateness_ms);
	w__u64(&w, t->tag);
	w__i64(&w, t->clock);
	w__u64(&w, t->stats.late);
	w__u64(&w, t->stats.duplicates);
	w__u64(&w, t->stats.nomem);

	w__u32(&w, t->count);
	for(idx = 0; idx < t->count; idx++) w__series(&w, t, series__at(t, idx));

	/* the sweep order, so a restored table closes quiet windows exactly when this one would */
	n_list = 0;
	for(idx = t->head; idx != NIL; idx = series__at(t, idx)->next) n_list++;
	w__u32(&w, n_list);
	for(idx = t->head; idx != NIL; idx = series__at(t, idx)->next) w__u32(&w, idx);

	sum = XXH3_64bits_digest(w.h);
	if(w.ok && fwrite(&sum, 1, sizeof(sum), w.f) != sizeof(sum)) w.ok = false;
	if(!w.ok || fflush(w.f) != 0){
		series__err(err, errlen, "write %s: %s", tmp, strerror(errno));
		goto failed;
	}
	if(fclose(w.f) != 0){
		w.f = NULL;
		series__err(err, errlen, "close %s: %s", tmp, strerror(errno));
		goto failed;
	}
	XXH3_freeState(w.h);
	return true;

failed:
	if(w.f) fclose(w.f);
	unlink(tmp);
	XXH3_freeState(w.h);
	return false;
}

bool series_publish(const char *path, char *err, size_t errlen)
{
	char tmp[4096];
	if(!series__tmp_path(path, tmp, sizeof(tmp), err, errlen)) return false;
	if(!series__fsync_path(tmp, O_RDONLY, err, errlen)){
		unlink(tmp);
		return false;
	}
	if(rename(tmp, path) != 0){
		series__err(err, errlen, "rename %s: %s", tmp, strerror(errno));
		unlink(tmp);
		return false;
	}
	return series__fsync_dir(path, err, errlen);
}

bool series_save(const struct series_table *t, const char *path, char *err, size_t errlen)
{
	return series_write(t, path, err, errlen) && series_publish(path, err, errlen);
}

struct ckpt_r {
	const unsigned char *p;
	size_t len, pos;
	bool ok;
};

static void r__bytes(struct ckpt_r *r, void *dst, size_t n)
{
	if(!r->ok || r->len - r->pos < n){
		r->ok = false;
		memset(dst, 0, n);
		return;
	}
	memcpy(dst, r->p + r->pos, n);
	r->pos += n;
}

static uint8_t r__u8(struct ckpt_r *r) { uint8_t v; r__bytes(r, &v, sizeof(v)); return v; }
static uint16_t r__u16(struct ckpt_r *r) { uint16_t v; r__bytes(r, &v, sizeof(v)); return v; }
static uint32_t r__u32(struct ckpt_r *r) { uint32_t v; r__bytes(r, &v, sizeof(v)); return v; }
static uint64_t r__u64(struct ckpt_r *r) { uint64_t v; r__bytes(r, &v, sizeof(v)); return v; }
static int64_t r__i64(struct ckpt_r *r) { int64_t v; r__bytes(r, &v, sizeof(v)); return v; }
static float r__f32(struct ckpt_r *r) { float v; r__bytes(r, &v, sizeof(v)); return v; }
static double r__f64(struct ckpt_r *r) { double v; r__bytes(r, &v, sizeof(v)); return v; }

static bool r__name(struct ckpt_r *r, char *buf, size_t *len)
{
	*len = r__u16(r);
	if(!r->ok || *len == 0 || *len > SERIES_NAME_MAX) return false;
	r__bytes(r, buf, *len);
	buf[*len] = '\0';
	return r->ok && strlen(buf) == *len;
}

/* what a corrupt file could hold that would make the window code misbehave */
static bool series__win_ok(const struct win_state *w, const struct win_params *p)
{
	int i;

	if(w->max_ts == INT64_MIN) return w->count[WIN_CUR] == 0 && w->count[WIN_PREV] == 0;
	if(w->max_ts < 0 || w->max_ts > SERIES_TS_MAX) return false;
	if(w->cur_start != win_align(w->max_ts, p->window_ms)) return false;
	if(w->closed_until != INT64_MIN && w->closed_until != win_align(w->closed_until, p->window_ms)) return false;
	for(i = 0; i < 2; i++){
		if(w->count[i] == 0) continue;
		if(w->first_off[i] > w->last_off[i] || w->last_off[i] >= p->window_ms) return false;
	}
	return true;
}

static bool series__read_series(struct ckpt_r *r, struct series_table *t, char *err, size_t errlen)
{
	char dev[SERIES_NAME_MAX + 1], sensor[SERIES_NAME_MAX + 1];
	struct series *s, tmp;
	size_t dlen, slen;
	uint32_t idx, n;
	uint64_t key;
	uint8_t flags;
	int i;

	if(!r__name(r, dev, &dlen) || !r__name(r, sensor, &slen)){
		series__err(err, errlen, "bad series name at offset %zu", r->pos);
		return false;
	}
	tmp.seen_ms = r__i64(r);
	for(i = 0; i < SERIES_DEDUP_DEPTH; i++) tmp.dedup[i] = r__i64(r);

	det_init(&tmp.det);
	tmp.det.mean = r__f64(r);
	tmp.det.mad = r__f32(r);
	n = r__u32(r);
	flags = r__u8(r);
	uint32_t run = r__u32(r);
	if(n >= (1u << 20) || run >= (1u << 10) || flags > 3 || !isfinite(tmp.det.mean) || !isfinite(tmp.det.mad)){
		series__err(err, errlen, "bad detector state for %s/%s", dev, sensor);
		return false;
	}
	tmp.det.n = n;
	tmp.det.run = run;
	tmp.det.thr_firing = flags & 1;
	tmp.det.z_firing = (flags >> 1) & 1;

	tmp.win.cur_start = r__i64(r);
	tmp.win.closed_until = r__i64(r);
	tmp.win.max_ts = r__i64(r);
	for(i = 0; i < 2; i++){
		tmp.win.sum[i] = r__f64(r);
		tmp.win.min[i] = r__f64(r);
		tmp.win.max[i] = r__f64(r);
		tmp.win.count[i] = r__u32(r);
		tmp.win.first_off[i] = r__u32(r);
		tmp.win.last_off[i] = r__u32(r);
	}
	if(!r->ok){
		series__err(err, errlen, "truncated checkpoint");
		return false;
	}
	if(!series__win_ok(&tmp.win, &t->wp)){
		series__err(err, errlen, "bad window state for %s/%s", dev, sensor);
		return false;
	}

	key = series__key(dev, dlen, sensor, slen);
	if(series__find(t, key, dev, sensor, &idx)){
		series__err(err, errlen, "series %s/%s saved twice", dev, sensor);
		return false;
	}
	s = series__create(t, key, dev, dlen, sensor, slen, &idx);
	if(!s){
		series__err(err, errlen, "out of memory");
		return false;
	}
	s->seen_ms = tmp.seen_ms;
	memcpy(s->dedup, tmp.dedup, sizeof(s->dedup));
	s->det = tmp.det;
	s->win = tmp.win;
	return true;
}

static bool series__parse(struct ckpt_r *r, struct series_table *t, char *err, size_t errlen)
{
	char magic[8];
	uint32_t n, i, idx;
	int64_t window_ms, lateness_ms;

	r__bytes(r, magic, sizeof(magic));
	if(!r->ok || memcmp(magic, CKPT_MAGIC, sizeof(magic)) != 0){
		series__err(err, errlen, "not a series checkpoint");
		return false;
	}
	if(r__u32(r) != CKPT_VERSION || r__u32(r) != CKPT_ENDIAN){
		series__err(err, errlen, "unsupported checkpoint version or byte order");
		return false;
	}
	window_ms = r__i64(r);
	lateness_ms = r__i64(r);
	if(window_ms != t->wp.window_ms || lateness_ms != t->wp.lateness_ms){
		/* open windows of another size cannot be resumed, and half of them would be wrong */
		series__err(err, errlen, "checkpoint has window %" PRId64 " ms, lateness %" PRId64
				" ms; configured %" PRId64 " ms, %" PRId64 " ms",
				window_ms, lateness_ms, t->wp.window_ms, t->wp.lateness_ms);
		return false;
	}
	t->tag = r__u64(r);
	t->clock = r__i64(r);
	t->stats.late = r__u64(r);
	t->stats.duplicates = r__u64(r);
	t->stats.nomem = r__u64(r);

	n = r__u32(r);
	if(!r->ok){
		series__err(err, errlen, "truncated checkpoint");
		return false;
	}
	for(i = 0; i < n; i++){
		if(!series__read_series(r, t, err, errlen)) return false;
	}

	n = r__u32(r);
	for(i = 0; r->ok && i < n; i++){
		struct series *s;

		idx = r__u32(r);
		if(!r->ok) break;
		if(idx >= t->count || list__linked(t, idx, series__at(t, idx))){
			series__err(err, errlen, "bad sweep list entry %u", idx);
			return false;
		}
		s = series__at(t, idx);
		/* a list out of seen_ms order would stall the sweep behind a fresh series */
		if(t->tail != NIL && s->seen_ms < series__at(t, t->tail)->seen_ms){
			series__err(err, errlen, "sweep list out of order at %u", idx);
			return false;
		}
		list__append(t, idx, s);
	}
	if(!r->ok || r->pos != r->len){
		series__err(err, errlen, r->ok ? "trailing bytes in checkpoint" : "truncated checkpoint");
		return false;
	}
	return true;
}

bool series_load(struct series_table *t, const char *path, char *err, size_t errlen)
{
	struct series_table *nt = NULL, swap;
	struct ckpt_r r = {.ok = true};
	unsigned char *data = NULL;
	struct stat st;
	uint64_t sum;
	size_t got = 0;
	int fd = -1;

	if(t->count != 0 || t->n_names != 0){
		series__err(err, errlen, "checkpoint load into a table already in use");
		return false;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if(fd < 0){
		series__err(err, errlen, "open %s: %s", path, strerror(errno));
		return false;
	}
	if(fstat(fd, &st) != 0){
		series__err(err, errlen, "stat %s: %s", path, strerror(errno));
		goto failed;
	}
	if(st.st_size < 16 || (uint64_t)st.st_size > SIZE_MAX / 2){
		series__err(err, errlen, "%s: bad size %lld", path, (long long)st.st_size);
		goto failed;
	}
	data = malloc((size_t)st.st_size);
	if(!data){
		series__err(err, errlen, "out of memory");
		goto failed;
	}
	while(got < (size_t)st.st_size){
		ssize_t rc = read(fd, data + got, (size_t)st.st_size - got);

		if(rc < 0 && errno == EINTR) continue;
		if(rc <= 0){
			series__err(err, errlen, "read %s: %s", path, rc < 0 ? strerror(errno) : "short read");
			goto failed;
		}
		got += (size_t)rc;
	}
	close(fd);
	fd = -1;

	memcpy(&sum, data + got - sizeof(sum), sizeof(sum));
	if(sum != XXH3_64bits(data, got - sizeof(sum))){
		series__err(err, errlen, "%s: checksum mismatch", path);
		goto failed;
	}
	r.p = data;
	r.len = got - sizeof(sum);

	/* build aside and swap, so a bad file leaves t as it was */
	nt = series_table_new(&t->p);
	if(!nt){
		series__err(err, errlen, "out of memory");
		goto failed;
	}
	if(!series__parse(&r, nt, err, errlen)) goto failed;
	free(data);

	swap = *t;
	*t = *nt;
	*nt = swap;
	series_table_free(nt);
	return true;

failed:
	if(fd >= 0) close(fd);
	free(data);
	series_table_free(nt);
	return false;
}
