/* Binary COPY tuples and the sink's batch bookkeeping (see pg_copy.h). */
#include <endian.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pg_copy.h"
#include "reason.h"

#define PG_EPOCH_MS 946684800000LL      /* 2000-01-01T00:00:00Z */
#define PG_MS_LIMIT 9000000000000000LL  /* beyond every valid timestamp, and * 1000 still fits */
#define PG_TIME_INVALID (INT64_MAX - 1) /* past END_TIMESTAMP and not 'infinity': the server refuses it */

static const struct pg_column metrics_cols[] = {
	{"device_id", PG_C_TEXT}, {"sensor_id", PG_C_TEXT}, {"ts", PG_C_TSTZ}, {"value", PG_C_FLOAT8},
	{"unit", PG_C_TEXT}, {"location", PG_C_TEXT}, {"zone", PG_C_TEXT}, {"device_type", PG_C_TEXT},
	{"threshold", PG_C_FLOAT8}, {"is_anomaly", PG_C_BOOL}, {"zscore", PG_C_FLOAT8}, {"ts_missing", PG_C_BOOL},
	{"late", PG_C_BOOL}, {"unenriched", PG_C_BOOL}, {"id", PG_C_INT8}, {"arrival", PG_C_TSTZ},
};

static const struct pg_column alerts_cols[] = {
	{"id", PG_C_INT8}, {"device_id", PG_C_TEXT}, {"sensor_id", PG_C_TEXT}, {"ts", PG_C_TSTZ},
	{"kind", PG_C_TEXT}, {"state", PG_C_TEXT}, {"value", PG_C_FLOAT8}, {"limit_value", PG_C_FLOAT8},
	{"score", PG_C_FLOAT8}, {"unit", PG_C_TEXT}, {"location", PG_C_TEXT}, {"zone", PG_C_TEXT},
};

static const struct pg_column quarantine_cols[] = {
	{"id", PG_C_INT8}, {"reason", PG_C_TEXT}, {"detail", PG_C_TEXT}, {"device_id", PG_C_TEXT},
	{"sensor_id", PG_C_TEXT}, {"topic", PG_C_TEXT}, {"client_id", PG_C_TEXT}, {"username", PG_C_TEXT},
	{"qos", PG_C_INT2}, {"payload", PG_C_BYTEA}, {"payload_bytes", PG_C_INT4}, {"truncated", PG_C_BOOL},
	{"arrival", PG_C_TSTZ},
};

static const struct pg_column agg_cols[] = {
	{"device_id", PG_C_TEXT}, {"sensor_id", PG_C_TEXT}, {"window_start", PG_C_TSTZ}, {"window_end", PG_C_TSTZ},
	{"count", PG_C_INT8}, {"avg", PG_C_FLOAT8}, {"min", PG_C_FLOAT8}, {"max", PG_C_FLOAT8}, {"sum", PG_C_FLOAT8},
	{"first_ts", PG_C_TSTZ}, {"last_ts", PG_C_TSTZ}, {"unit", PG_C_TEXT}, {"location", PG_C_TEXT},
	{"zone", PG_C_TEXT}, {"id", PG_C_INT8},
};

#define NCOLS(a) (sizeof(a) / sizeof((a)[0]))

const struct pg_table pg_tables[PG_T__COUNT] = {
	[PG_T_METRICS] = {"metrics", "iotpipe_stage_metrics", "device_id, sensor_id, ts",
		"device_id, sensor_id, ts, value, unit, location, zone, device_type, threshold, is_anomaly, zscore, "
		"ts_missing, late, unenriched, id, arrival", NCOLS(metrics_cols), metrics_cols},
	[PG_T_ALERTS] = {"alerts", "iotpipe_stage_alerts", "id",
		"id, device_id, sensor_id, ts, kind, state, value, limit_value, score, unit, location, zone",
		NCOLS(alerts_cols), alerts_cols},
	[PG_T_QUARANTINE] = {"quarantine", "iotpipe_stage_quarantine", "id",
		"id, reason, detail, device_id, sensor_id, topic, client_id, username, qos, payload, payload_bytes, "
		"truncated, arrival", NCOLS(quarantine_cols), quarantine_cols},
	[PG_T_AGG] = {"metrics_agg", "iotpipe_stage_metrics_agg", "device_id, sensor_id, window_start",
		"device_id, sensor_id, window_start, window_end, count, avg, min, max, sum, first_ts, last_ts, unit, "
		"location, zone, id", NCOLS(agg_cols), agg_cols},
};

const uint8_t pg_copy_header[PG_COPY_HEADER_LEN] = {
	'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0, /* flags */ 0, 0, 0, 0, /* extension */ 0, 0, 0, 0,
};
const uint8_t pg_copy_trailer[PG_COPY_TRAILER_LEN] = {0xff, 0xff};

/* any thread */
int pg_table_of_kind(uint16_t kind)
{
	switch(kind){
	case REC_ENRICHED: return PG_T_METRICS;
	case REC_ALERT: return PG_T_ALERTS;
	case REC_QUARANTINE: return PG_T_QUARANTINE;
	case REC_AGGREGATE: return PG_T_AGG;
	default: return -1;
	}
}

/* any thread */
int64_t pg_time_from_ms(int64_t ms)
{
	if(ms > PG_MS_LIMIT || ms < -PG_MS_LIMIT) return PG_TIME_INVALID;
	return (ms - PG_EPOCH_MS) * 1000;
}

/* any thread */
int64_t pg_time_to_ms(int64_t t)
{
	int64_t ms = t / 1000;
	if(t % 1000 < 0) ms--;
	return ms + PG_EPOCH_MS;
}

/* any thread */
void pg_tuples_init(struct pg_tuples *t)
{
	memset(t, 0, sizeof(*t));
}

/* any thread */
void pg_tuples_reset(struct pg_tuples *t)
{
	t->len = 0;
	t->n = 0;
}

/* any thread */
void pg_tuples_free(struct pg_tuples *t)
{
	free(t->buf);
	free(t->off);
	free(t->lsn);
	pg_tuples_init(t);
}

/* room for one more tuple of at most need bytes */
static bool tuples_reserve(struct pg_tuples *t, size_t need)
{
	if(t->len + need > t->cap){
		size_t cap = t->cap ? t->cap : 65536;
		while(cap < t->len + need) cap *= 2;
		uint8_t *b = realloc(t->buf, cap);
		if(!b) return false;
		t->buf = b;
		t->cap = cap;
	}
	if(t->n == t->ncap){
		size_t ncap = t->ncap ? t->ncap * 2 : 1024;
		size_t *off = realloc(t->off, ncap * sizeof(*off));
		if(!off) return false;
		t->off = off;
		uint64_t *lsn = realloc(t->lsn, ncap * sizeof(*lsn));
		if(!lsn) return false;
		t->lsn = lsn;
		t->ncap = ncap;
	}
	return true;
}

/* The writers below run after tuples_reserve has made room for the whole tuple. */
static void put_raw(struct pg_tuples *t, const void *p, size_t n)
{
	memcpy(t->buf + t->len, p, n);
	t->len += n;
}

/* any thread */
static void put_i16(struct pg_tuples *t, int16_t v)
{
	uint16_t be = htobe16((uint16_t)v);
	put_raw(t, &be, 2);
}

/* any thread */
static void put_i32(struct pg_tuples *t, int32_t v)
{
	uint32_t be = htobe32((uint32_t)v);
	put_raw(t, &be, 4);
}

/* any thread */
static void put_i64(struct pg_tuples *t, int64_t v)
{
	uint64_t be = htobe64((uint64_t)v);
	put_raw(t, &be, 8);
}

/* any thread */
static void col_null(struct pg_tuples *t)
{
	put_i32(t, -1);
}

/* any thread */
static void col_bytes(struct pg_tuples *t, const void *p, size_t n)
{
	put_i32(t, (int32_t)n);
	if(n) put_raw(t, p, n);
}

/* any thread */
static void col_text(struct pg_tuples *t, const char *s)
{
	if(!s) col_null(t);
	else col_bytes(t, s, strlen(s));
}

/* any thread */
static void col_i16(struct pg_tuples *t, int16_t v)
{
	put_i32(t, 2);
	put_i16(t, v);
}

/* any thread */
static void col_i32(struct pg_tuples *t, int32_t v)
{
	put_i32(t, 4);
	put_i32(t, v);
}

/* any thread */
static void col_i64(struct pg_tuples *t, int64_t v)
{
	put_i32(t, 8);
	put_i64(t, v);
}

/* any thread */
static void col_f8(struct pg_tuples *t, double v)
{
	uint64_t bits;
	memcpy(&bits, &v, sizeof(bits));
	put_i32(t, 8);
	put_i64(t, (int64_t)bits);
}

/* NaN (no z-score yet, no threshold) is "no value", not PostgreSQL's NaN */
static void col_f8_opt(struct pg_tuples *t, double v, bool present)
{
	if(present && !isnan(v)) col_f8(t, v);
	else col_null(t);
}

/* any thread */
static void col_bool(struct pg_tuples *t, bool v)
{
	uint8_t b = v;
	put_i32(t, 1);
	put_raw(t, &b, 1);
}

/* any thread */
static void col_tstz(struct pg_tuples *t, int64_t ms)
{
	col_i64(t, pg_time_from_ms(ms));
}

/* any thread */
static size_t slen(const char *s)
{
	return s ? strlen(s) : 0;
}

/* the id as PostgreSQL's bigint: the same 64 bits, read as signed */
static int64_t id_bits(uint64_t id)
{
	int64_t v;
	memcpy(&v, &id, sizeof(v));
	return v;
}

/* any thread */
bool pg_tuples_add(struct pg_tuples *t, const struct outrec *r, uint64_t lsn)
{
	int tab = pg_table_of_kind(r->kind);
	if(tab < 0) return false;
	/* every fixed-size field fits 12 bytes with its length word; the strings come on top */
	size_t need = 2 + pg_tables[tab].ncols * 12 + slen(r->device_id) + slen(r->sensor_id) + slen(r->location)
		+ slen(r->zone) + slen(r->device_type) + slen(r->unit) + slen(r->topic) + slen(r->client_id)
		+ slen(r->username) + slen(r->detail) + r->payload_len + 64;
	if(!tuples_reserve(t, need)) return false;
	t->off[t->n] = t->len;
	t->lsn[t->n] = lsn;
	put_i16(t, (int16_t)pg_tables[tab].ncols);
	switch(tab){
	case PG_T_METRICS:
		col_text(t, r->device_id);
		col_text(t, r->sensor_id);
		col_tstz(t, r->ts_ms);
		col_f8(t, r->value);
		col_text(t, r->unit);
		col_text(t, r->location);
		col_text(t, r->zone);
		col_text(t, r->device_type);
		col_f8_opt(t, r->limit, r->flags & OUT_HAS_THRESHOLD);
		col_bool(t, r->flags & OUT_ANOMALY);
		col_f8_opt(t, r->score, isfinite(r->score));
		col_bool(t, r->flags & OUT_TS_MISSING);
		col_bool(t, r->flags & OUT_LATE);
		col_bool(t, r->flags & OUT_UNENRICHED);
		col_i64(t, id_bits(r->id));
		col_tstz(t, r->arrival_ms);
		break;
	case PG_T_ALERTS:
		col_i64(t, id_bits(r->id));
		col_text(t, r->device_id);
		col_text(t, r->sensor_id);
		col_tstz(t, r->ts_ms);
		col_text(t, r->alert_kind == OUT_ALERT_ZSCORE ? "zscore" : "threshold");
		col_text(t, r->alert_state == OUT_ALERT_RESOLVED ? "resolved" : "firing");
		col_f8_opt(t, r->value, true);
		col_f8_opt(t, r->limit, true);
		col_f8_opt(t, r->score, isfinite(r->score));
		col_text(t, r->unit);
		col_text(t, r->location);
		col_text(t, r->zone);
		break;
	case PG_T_QUARANTINE:
		col_i64(t, id_bits(r->id));
		col_text(t, reason_name((enum ip_reason)r->reason));
		col_text(t, r->detail);
		col_text(t, r->device_id);
		col_text(t, r->sensor_id);
		col_text(t, r->topic);
		col_text(t, r->client_id);
		col_text(t, r->username);
		if(r->topic) col_i16(t, r->qos);
		else col_null(t);
		col_bytes(t, r->payload, r->payload_len);
		col_i32(t, (int32_t)((r->flags & OUT_TRUNCATED) ? r->orig_payload_len : r->payload_len));
		col_bool(t, r->flags & OUT_TRUNCATED);
		col_tstz(t, r->arrival_ms);
		break;
	case PG_T_AGG:
		col_text(t, r->device_id);
		col_text(t, r->sensor_id);
		col_tstz(t, r->ts_ms);
		col_tstz(t, r->win_end_ms);
		col_i64(t, r->count);
		col_f8_opt(t, r->count ? r->sum / r->count : NAN, r->count > 0);
		col_f8_opt(t, r->min, r->count > 0);
		col_f8_opt(t, r->max, r->count > 0);
		col_f8_opt(t, r->sum, true);
		col_tstz(t, r->first_ts_ms);
		col_tstz(t, r->last_ts_ms);
		col_text(t, r->unit);
		col_text(t, r->location);
		col_text(t, r->zone);
		col_i64(t, id_bits(r->id));
		break;
	}
	t->n++;
	return true;
}

/* any thread */
const uint8_t *pg_tuples_span(const struct pg_tuples *t, size_t lo, size_t hi, size_t *len)
{
	if(lo >= hi || hi > t->n){
		*len = 0;
		return t->buf;
	}
	size_t end = hi < t->n ? t->off[hi] : t->len;
	*len = end - t->off[lo];
	return t->buf + t->off[lo];
}

/* any thread */
static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return be32toh(v);
}

/* any thread */
static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return be64toh(v);
}

/* any thread */
bool pg_tuple_field(const uint8_t *tup, size_t len, size_t col, const uint8_t **val, size_t *vlen)
{
	if(len < 2) return false;
	uint16_t ncols = (uint16_t)((tup[0] << 8) | tup[1]);
	if(col >= ncols) return false;
	size_t off = 2;
	for(size_t i = 0;; i++){
		if(off + 4 > len) return false;
		int32_t n = (int32_t)get_u32(tup + off);
		off += 4;
		if(n >= 0 && (size_t)n > len - off) return false;
		if(i == col){
			if(n < 0) return false;
			*val = tup + off;
			*vlen = (size_t)n;
			return true;
		}
		if(n > 0) off += (size_t)n;
	}
}

/* any thread */
int pg_table_column(enum pg_table_id t, const char *name)
{
	for(size_t i = 0; i < pg_tables[t].ncols; i++){
		if(!strcmp(pg_tables[t].cols[i].name, name)) return (int)i;
	}
	return -1;
}

struct jbuf {
	char *p;
	size_t len, cap;
	bool ok;
};

/* any thread */
static void jput(struct jbuf *j, const char *s, size_t n)
{
	if(!j->ok || j->len + n >= j->cap){
		j->ok = false;
		return;
	}
	memcpy(j->p + j->len, s, n);
	j->len += n;
}

/* any thread */
static void jputs(struct jbuf *j, const char *s)
{
	jput(j, s, strlen(s));
}

/* a JSON string; bytes the server refused as text may be anything, so controls are escaped and the
 * rest is left to the payload being bytea */
static void jstr(struct jbuf *j, const uint8_t *s, size_t n)
{
	jput(j, "\"", 1);
	for(size_t i = 0; i < n; i++){
		char e[8];
		uint8_t c = s[i];
		if(c == '"' || c == '\\'){
			e[0] = '\\';
			e[1] = (char)c;
			jput(j, e, 2);
		}else if(c < 0x20 || c == 0x7f){
			snprintf(e, sizeof(e), "\\u%04x", c);
			jput(j, e, 6);
		}else{
			jput(j, (const char *)&c, 1);
		}
	}
	jput(j, "\"", 1);
}

/* any thread */
static void jtime(struct jbuf *j, int64_t pgtime)
{
	char b[64];
	int64_t ms = pg_time_to_ms(pgtime);
	int64_t secs = ms / 1000, frac = ms % 1000;
	if(frac < 0){
		frac += 1000;
		secs--;
	}
	time_t tt = (time_t)secs;
	struct tm tm;
	if(pgtime == PG_TIME_INVALID || !gmtime_r(&tt, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0){
		snprintf(b, sizeof(b), "%" PRId64, ms);
		jputs(j, b);
		return;
	}
	snprintf(b, sizeof(b), "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
	jputs(j, b);
}

/* any thread */
size_t pg_tuple_json(enum pg_table_id t, const uint8_t *tup, size_t len, char *out, size_t cap)
{
	struct jbuf j = {out, 0, cap, cap > 0};
	const struct pg_table *tab = &pg_tables[t];
	if(len < 2 || (size_t)((tup[0] << 8) | tup[1]) != tab->ncols) return 0;
	jput(&j, "{", 1);
	for(size_t i = 0; i < tab->ncols; i++){
		const uint8_t *v;
		size_t n;
		char b[64];
		if(i) jput(&j, ",", 1);
		jstr(&j, (const uint8_t *)tab->cols[i].name, strlen(tab->cols[i].name));
		jput(&j, ":", 1);
		if(!pg_tuple_field(tup, len, i, &v, &n)){
			jputs(&j, "null");
			continue;
		}
		switch(tab->cols[i].type){
		case PG_C_TEXT:
			jstr(&j, v, n);
			break;
		case PG_C_FLOAT8: {
			uint64_t bits = get_u64(v);
			double d;
			memcpy(&d, &bits, sizeof(d));
			if(n != 8 || !isfinite(d)) jputs(&j, "null");
			else{
				snprintf(b, sizeof(b), "%.17g", d);
				jputs(&j, b);
			}
			break;
		}
		case PG_C_TSTZ:
			if(n == 8) jtime(&j, (int64_t)get_u64(v));
			else jputs(&j, "null");
			break;
		case PG_C_BOOL:
			jputs(&j, n == 1 && v[0] ? "true" : "false");
			break;
		case PG_C_INT2:
			snprintf(b, sizeof(b), "%d", n == 2 ? (int16_t)((v[0] << 8) | v[1]) : 0);
			jputs(&j, b);
			break;
		case PG_C_INT4:
			snprintf(b, sizeof(b), "%" PRId32, n == 4 ? (int32_t)get_u32(v) : 0);
			jputs(&j, b);
			break;
		case PG_C_INT8:
			/* ids: 16 hex digits, as in every other output */
			snprintf(b, sizeof(b), "\"%016" PRIx64 "\"", n == 8 ? get_u64(v) : 0);
			jputs(&j, b);
			break;
		case PG_C_BYTEA: {
			static const char hex[] = "0123456789abcdef";
			jput(&j, "\"\\\\x", 4);
			for(size_t k = 0; k < n; k++){
				char h[2] = {hex[v[k] >> 4], hex[v[k] & 15]};
				jput(&j, h, 2);
			}
			jput(&j, "\"", 1);
			break;
		}
		}
	}
	jput(&j, "}", 1);
	if(!j.ok) return 0;
	out[j.len] = '\0';
	return j.len;
}

/* the server's words, as valid UTF-8 (anything else would make the quarantine row fail too) */
static void utf8_clean(char *s)
{
	uint8_t *p = (uint8_t *)s;
	while(*p){
		size_t k = 0;
		if(*p < 0x80){
			p++;
			continue;
		}
		if(*p >= 0xC2 && *p <= 0xDF) k = 1;
		else if(*p >= 0xE0 && *p <= 0xEF) k = 2;
		else if(*p >= 0xF0 && *p <= 0xF4) k = 3;
		size_t i = 1;
		while(k && i <= k && (p[i] & 0xC0) == 0x80) i++;
		if(!k || i <= k){
			*p++ = '?';
			continue;
		}
		p += k + 1;
	}
}

/* a text column of the refused tuple, copied (NULL when absent) */
static char *field_dup(enum pg_table_id t, const uint8_t *tup, size_t len, const char *name)
{
	int c = pg_table_column(t, name);
	const uint8_t *v;
	size_t n;
	if(c < 0 || pg_tables[t].cols[c].type != PG_C_TEXT || !pg_tuple_field(tup, len, (size_t)c, &v, &n)) return NULL;
	if(memchr(v, '\0', n)) return NULL;
	char *s = malloc(n + 1);
	if(s){
		memcpy(s, v, n);
		s[n] = '\0';
	}
	return s;
}

/* any thread */
bool pg_tuples_add_reject(struct pg_tuples *q, enum pg_table_id t, const uint8_t *tup, size_t len,
		uint64_t lsn, const char *why, int64_t now_ms, bool minimal)
{
	const uint8_t *v;
	size_t n;
	uint64_t orig_id = 0;
	int c = pg_table_column(t, "id");
	bool have_id = c >= 0 && pg_tuple_field(tup, len, (size_t)c, &v, &n) && n == 8;
	if(have_id) orig_id = get_u64(v);
	char idhex[17];
	snprintf(idhex, sizeof(idhex), "%016" PRIx64, orig_id);

	char *detail = malloc(strlen(why) + 160);
	size_t jcap = len * 6 + 1024;
	char *json = malloc(jcap);
	char *dev = minimal ? NULL : field_dup(t, tup, len, "device_id");
	char *sensor = minimal ? NULL : field_dup(t, tup, len, "sensor_id");
	char *topic = minimal ? NULL : field_dup(t, tup, len, "topic");
	char *client = minimal ? NULL : field_dup(t, tup, len, "client_id");
	char *user = minimal ? NULL : field_dup(t, tup, len, "username");
	bool ok = false;
	if(!detail || !json) goto failed;
	sprintf(detail, "postgresql: %s (%s row %s, outbox LSN %" PRIu64 ")", why, pg_tables[t].name, idhex, lsn);
	utf8_clean(detail);

	/* a refused quarantine row keeps its original payload; any other row is kept as JSON */
	const uint8_t *payload = (const uint8_t *)json;
	size_t plen = 0;
	int32_t pbytes = 0;
	bool truncated = false;
	int pc = pg_table_column(t, "payload");
	if(pc >= 0){
		if(pg_tuple_field(tup, len, (size_t)pc, &v, &n)){
			payload = v;
			plen = n;
		}
		int bc = pg_table_column(t, "payload_bytes");
		pbytes = (int32_t)plen;
		if(bc >= 0 && pg_tuple_field(tup, len, (size_t)bc, &v, &n) && n == 4) pbytes = (int32_t)get_u32(v);
		truncated = (size_t)pbytes > plen;
	}else{
		plen = pg_tuple_json(t, tup, len, json, jcap);
		pbytes = (int32_t)plen;
	}
	int64_t arrival = now_ms;
	int ac = pg_table_column(t, "arrival");
	if(!minimal && ac >= 0 && pg_tuple_field(tup, len, (size_t)ac, &v, &n) && n == 8){
		arrival = pg_time_to_ms((int64_t)get_u64(v));
	}

	size_t need = 2 + pg_tables[PG_T_QUARANTINE].ncols * 12 + strlen(detail) + slen(dev) + slen(sensor)
		+ slen(topic) + slen(client) + slen(user) + plen + 64;
	if(!tuples_reserve(q, need)) goto failed;
	q->off[q->n] = q->len;
	q->lsn[q->n] = lsn;
	put_i16(q, (int16_t)pg_tables[PG_T_QUARANTINE].ncols);
	/* derived from the refused row's id: a replay refused again lands on the same quarantine row */
	col_i64(q, id_bits(record_id_lsn(REC_QUARANTINE, have_id ? orig_id : lsn, UINT32_MAX)));
	col_text(q, reason_name(IP_R_SINK_REJECTED));
	col_text(q, detail);
	col_text(q, dev);
	col_text(q, sensor);
	col_text(q, topic);
	col_text(q, client);
	col_text(q, user);
	col_null(q);
	col_bytes(q, payload, plen);
	col_i32(q, pbytes);
	col_bool(q, truncated);
	col_tstz(q, arrival);
	q->n++;
	ok = true;
failed:
	free(detail);
	free(json);
	free(dev);
	free(sensor);
	free(topic);
	free(client);
	free(user);
	return ok;
}

/* any thread */
void pg_bisect_init(struct pg_bisect *b, size_t lo, size_t hi)
{
	b->n = 0;
	if(hi > lo){
		b->lo[0] = lo;
		b->hi[0] = hi;
		b->n = 1;
	}
}

/* any thread */
bool pg_bisect_next(const struct pg_bisect *b, size_t *lo, size_t *hi)
{
	if(b->n == 0) return false;
	*lo = b->lo[b->n - 1];
	*hi = b->hi[b->n - 1];
	return true;
}

/* any thread */
bool pg_bisect_result(struct pg_bisect *b, bool ok, size_t *bad)
{
	if(b->n == 0) return false;
	b->n--;
	size_t lo = b->lo[b->n], hi = b->hi[b->n];
	if(ok) return false;
	if(hi - lo == 1){
		*bad = lo;
		return true;
	}
	/* Each split leaves one sibling behind per level, so the stack stays within log2(n) + 1. */
	size_t mid = lo + (hi - lo) / 2;
	b->lo[b->n] = mid;
	b->hi[b->n] = hi;
	b->n++;
	b->lo[b->n] = lo;
	b->hi[b->n] = mid;
	b->n++;
	return false;
}

/* any thread */
int pg_bisect_pending(const struct pg_bisect *b)
{
	return b->n;
}

/* any thread */
bool pg_inflight_init(struct pg_inflight *f, size_t cap, uint64_t committed)
{
	memset(f, 0, sizeof(*f));
	f->hi = calloc(cap, sizeof(*f->hi));
	f->done = calloc(cap, sizeof(*f->done));
	f->cap = cap;
	f->committed = committed;
	return f->hi && f->done;
}

/* any thread */
void pg_inflight_free(struct pg_inflight *f)
{
	free(f->hi);
	free(f->done);
	memset(f, 0, sizeof(*f));
}

/* any thread */
bool pg_inflight_full(const struct pg_inflight *f)
{
	return f->tail - f->head >= f->cap;
}

/* any thread */
uint64_t pg_inflight_push(struct pg_inflight *f, uint64_t hi)
{
	uint64_t seq = f->tail++;
	f->hi[seq % f->cap] = hi;
	f->done[seq % f->cap] = false;
	return seq;
}

/* any thread */
uint64_t pg_inflight_done(struct pg_inflight *f, uint64_t seq)
{
	if(seq < f->head || seq >= f->tail) return f->committed;
	f->done[seq % f->cap] = true;
	while(f->head < f->tail && f->done[f->head % f->cap]){
		if(f->hi[f->head % f->cap] > f->committed) f->committed = f->hi[f->head % f->cap];
		f->head++;
	}
	return f->committed;
}
