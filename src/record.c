#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>
#include <yajl/yajl_gen.h>

#include "reason.h"
#include "record.h"

int capture_iov(struct capture_hdr *hdr, struct iovec iov[5], const char *topic, const char *client_id,
		const char *username, const void *payload, uint32_t payload_len, uint32_t max_payload,
		uint8_t qos, bool retain, int64_t arrival_ms)
{
	bool truncated = payload_len > max_payload;
	static const char empty[] = "";
	if(!client_id) client_id = empty;
	if(!username) username = empty;
	size_t tl = strlen(topic), cl = strlen(client_id), ul = strlen(username);
	if(tl > UINT16_MAX - 1) tl = UINT16_MAX - 1;   /* MQTT caps topics at 65535 anyway */
	if(cl > UINT16_MAX - 1) cl = UINT16_MAX - 1;
	if(ul > UINT16_MAX - 1) ul = UINT16_MAX - 1;
	hdr->arrival_ms = arrival_ms;
	hdr->payload_len = payload_len;
	/* an oversized payload keeps only its head: enough for its quarantine record to say what it was */
	hdr->stored_len = !truncated ? payload_len : max_payload < CAPTURE_HEAD_BYTES ? max_payload : CAPTURE_HEAD_BYTES;
	hdr->topic_len = (uint16_t)tl;
	hdr->client_len = (uint16_t)cl;
	hdr->user_len = (uint16_t)ul;
	hdr->qos = qos;
	hdr->flags = (uint8_t)((retain ? CAPTURE_RETAIN : 0) | (truncated ? CAPTURE_TRUNCATED : 0));
	/* strings go with their NUL so a decoded view hands out C strings without copying */
	iov[0] = (struct iovec){hdr, sizeof(*hdr)};
	iov[1] = (struct iovec){(void *)topic, tl + 1};
	iov[2] = (struct iovec){(void *)client_id, cl + 1};
	iov[3] = (struct iovec){(void *)username, ul + 1};
	iov[4] = (struct iovec){(void *)payload, hdr->stored_len};
	return 5;
}

bool capture_decode(const uint8_t *body, size_t len, struct capture *c)
{
	if(len < sizeof(c->h)) return false;
	memcpy(&c->h, body, sizeof(c->h));
	size_t need = sizeof(c->h) + (size_t)c->h.topic_len + c->h.client_len + c->h.user_len + 3 + c->h.stored_len;
	if(need != len) return false;
	const char *p = (const char *)body + sizeof(c->h);
	c->topic = p;
	p += c->h.topic_len + 1;
	c->client_id = p;
	p += c->h.client_len + 1;
	c->username = p;
	p += c->h.user_len + 1;
	c->payload = (const uint8_t *)p;
	return c->topic[c->h.topic_len] == '\0' && c->client_id[c->h.client_len] == '\0'
		&& c->username[c->h.user_len] == '\0';
}

/* The fixed part of an encoded outrec, in this machine's byte order (the journal never leaves it). */
struct outrec_fixed {
	uint16_t kind, flags, reason;
	uint8_t alert_kind, alert_state, qos, pad[3];
	uint32_t count, payload_len, orig_payload_len;
	uint64_t id, src_lsn;
	int64_t ts_ms, arrival_ms, win_end_ms, first_ts_ms, last_ts_ms;
	double value, limit, score, sum, min, max;
};

#define NSTR 10

static const char **str_field(struct outrec *r, int i)
{
	const char **f[NSTR] = {&r->device_id, &r->sensor_id, &r->location, &r->zone, &r->device_type,
		&r->unit, &r->topic, &r->client_id, &r->username, &r->detail};
	return f[i];
}

size_t outrec_encode(const struct outrec *r, uint8_t *buf, size_t cap)
{
	struct outrec_fixed f = {
		.kind = r->kind, .flags = r->flags, .reason = r->reason, .alert_kind = r->alert_kind,
		.alert_state = r->alert_state, .qos = r->qos, .count = r->count, .payload_len = r->payload_len,
		.orig_payload_len = r->orig_payload_len, .id = r->id, .src_lsn = r->src_lsn, .ts_ms = r->ts_ms,
		.arrival_ms = r->arrival_ms, .win_end_ms = r->win_end_ms, .first_ts_ms = r->first_ts_ms,
		.last_ts_ms = r->last_ts_ms, .value = r->value, .limit = r->limit, .score = r->score,
		.sum = r->sum, .min = r->min, .max = r->max,
	};
	if(cap < sizeof(f)) return 0;
	memcpy(buf, &f, sizeof(f));
	size_t off = sizeof(f);
	/* each string: a presence byte, then the bytes and their NUL */
	for(int i = 0; i < NSTR; i++){
		const char *s = *str_field((struct outrec *)r, i);
		size_t n = s ? strlen(s) + 1 : 0;
		if(off + 1 + n > cap) return 0;
		buf[off++] = s != NULL;
		if(s){
			memcpy(buf + off, s, n);
			off += n;
		}
	}
	if(off + r->payload_len > cap) return 0;
	if(r->payload_len) memcpy(buf + off, r->payload, r->payload_len);
	return off + r->payload_len;
}

bool outrec_decode(uint16_t kind, const uint8_t *body, size_t len, struct outrec *r)
{
	struct outrec_fixed f;
	if(len < sizeof(f)) return false;
	memcpy(&f, body, sizeof(f));
	if(f.kind != kind) return false;
	*r = (struct outrec){
		.kind = f.kind, .flags = f.flags, .reason = f.reason, .alert_kind = f.alert_kind,
		.alert_state = f.alert_state, .qos = f.qos, .count = f.count, .payload_len = f.payload_len,
		.orig_payload_len = f.orig_payload_len, .id = f.id, .src_lsn = f.src_lsn, .ts_ms = f.ts_ms,
		.arrival_ms = f.arrival_ms, .win_end_ms = f.win_end_ms, .first_ts_ms = f.first_ts_ms,
		.last_ts_ms = f.last_ts_ms, .value = f.value, .limit = f.limit, .score = f.score,
		.sum = f.sum, .min = f.min, .max = f.max,
	};
	size_t off = sizeof(f);
	for(int i = 0; i < NSTR; i++){
		if(off >= len) return false;
		if(!body[off++]) continue;
		const uint8_t *nul = memchr(body + off, '\0', len - off);
		if(!nul) return false;
		*str_field(r, i) = (const char *)body + off;
		off = (size_t)(nul - body) + 1;
	}
	if(len - off != r->payload_len) return false;
	r->payload = body + off;
	return true;
}

const char *rec_kind_name(uint16_t kind)
{
	switch(kind){
	case REC_CAPTURE: return "capture";
	case REC_RAW: return "raw";
	case REC_ENRICHED: return "enriched";
	case REC_ALERT: return "alert";
	case REC_QUARANTINE: return "quarantine";
	case REC_AGGREGATE: return "aggregate";
	default: return "unknown";
	}
}

/* JSON is generated by yajl's streaming generator straight into the caller's buffer: no tree, no
 * allocation per field. The generator escapes strings; numbers are formatted here (see put_num). */
struct jout {
	char *buf;
	size_t cap, len;
	bool overflow;
};

static void jout_print(void *ctx, const char *s, size_t n)
{
	struct jout *o = ctx;
	if(o->overflow || n >= o->cap - o->len){   /* keep a byte for the NUL */
		o->overflow = true;
		return;
	}
	char *d = o->buf + o->len;
	o->len += n;
	/* yajl prints many pieces of one to a few bytes: fixed-size copies (two may overlap) instead of a
	 * call or a byte loop */
	if(n >= 8){
		memcpy(d, s, n);
	}else if(n >= 4){
		memcpy(d, s, 4);
		memcpy(d + n - 4, s + n - 4, 4);
	}else if(n >= 2){
		memcpy(d, s, 2);
		memcpy(d + n - 2, s + n - 2, 2);
	}else if(n == 1){
		*d = *s;
	}
}

static void put_key(yajl_gen g, const char *k)
{
	yajl_gen_string(g, (const unsigned char *)k, strlen(k));
}

static void put_str(yajl_gen g, const char *k, const char *v)
{
	if(!v) return;
	put_key(g, k);
	yajl_gen_string(g, (const unsigned char *)v, strlen(v));
}

static void put_bool(yajl_gen g, const char *k, bool v)
{
	put_key(g, k);
	yajl_gen_bool(g, v);
}

/* 10^0 .. 10^22: exactly representable, so m / 10^d is correctly rounded */
static const double pow10_exact[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* v as the shortest decimal with at most 6 digits after the point that reads back as v, or 0.
 * Sensor readings, limits and rounded z-scores (detect.h) are such numbers. m / 10^d is the double
 * nearest to the decimal m·10^-d (both exact, one correctly rounded division), which is what a
 * reader's strtod gives back, so equality proves the round trip. */
static int fmt_short_decimal(double v, char *out)
{
	for(int d = 0; d <= 6; d++){
		double scaled = v * pow10_exact[d];
		if(!(fabs(scaled) < 9007199254740992.0)) return 0;
		double m = nearbyint(scaled);
		if(m / pow10_exact[d] != v) continue;
		char digits[24];
		uint64_t u = (uint64_t)fabs(m);
		int n = 0;
		do {
			digits[n++] = (char)('0' + u % 10);
			u /= 10;
		} while(u || n <= d);   /* at least one digit before the point */
		int len = 0;
		if(m < 0 || (m == 0 && signbit(v))) out[len++] = '-';
		while(n > 0){
			if(n == d) out[len++] = '.';
			out[len++] = digits[--n];
		}
		return len;
	}
	return 0;
}

/* Numbers print as the shortest decimal that reads back as the same double where that is quick to
 * find (fmt_short_decimal), else with 17 significant digits, which always reads back (yajl_gen_double's
 * own "%.20g" prints 0.1 as 0.10000000000000000555). Non-finite values have no JSON form and are left out. */
static void put_num(yajl_gen g, const char *k, double v)
{
	if(!isfinite(v)) return;
	char text[32];
	int n = fmt_short_decimal(v, text);
	if(n == 0) n = snprintf(text, sizeof(text), "%.17g", v);
	put_key(g, k);
	yajl_gen_number(g, text, (size_t)n);
}

/* Times and counts are integers: printed without the double's detour. */
static void put_int(yajl_gen g, const char *k, int64_t v)
{
	char text[24];
	int n = sizeof(text);
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	do {
		text[--n] = (char)('0' + u % 10);
		u /= 10;
	} while(u);
	if(v < 0) text[--n] = '-';
	put_key(g, k);
	yajl_gen_number(g, text + n, sizeof(text) - (size_t)n);
}

/* The id's text form is what consumers deduplicate by: 16 hex digits. */
static void put_id(yajl_gen g, uint64_t id)
{
	static const char digits[] = "0123456789abcdef";
	char hex[16];
	for(int i = 15; i >= 0; i--, id >>= 4) hex[i] = digits[id & 15];
	put_key(g, "id");
	yajl_gen_string(g, (const unsigned char *)hex, sizeof(hex));
}

static bool utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while(i < n){
		uint8_t c = s[i];
		size_t k;
		if(c < 0x80){
			if(c == 0) return false;   /* a C string would end here */
			i++;
			continue;
		}
		if(c >= 0xC2 && c <= 0xDF) k = 1;
		else if(c >= 0xE0 && c <= 0xEF) k = 2;
		else if(c >= 0xF0 && c <= 0xF4) k = 3;
		else return false;
		if(n - i <= k) return false;
		for(size_t j = 1; j <= k; j++){
			if((s[i + j] & 0xC0) != 0x80) return false;
		}
		i += k + 1;
	}
	return true;
}

/* A payload goes out as text when it is valid UTF-8 (JSON strings must be), else as hex. */
static void put_payload(yajl_gen g, const uint8_t *p, size_t n)
{
	if(utf8_valid(p, n)){
		put_key(g, "payload");
		yajl_gen_string(g, p, n);
		return;
	}
	static const char digits[] = "0123456789abcdef";
	char *h = malloc(2 * n + 1);
	if(!h) return;
	for(size_t i = 0; i < n; i++){
		h[2 * i] = digits[p[i] >> 4];
		h[2 * i + 1] = digits[p[i] & 15];
	}
	put_key(g, "payloadHex");
	yajl_gen_string(g, (const unsigned char *)h, 2 * n);
	free(h);
}

/* An enriched record's strings (device, sensor, unit, and the registry's location, zone and type) and
 * its threshold are the same for every reading of a series, and they are most of its JSON. A generator
 * made with keep_series remembers the JSON yajl made of them, per series, and splices it in again for
 * the next reading of that series: yajl then generates only what changes (id, value, time, detection).
 * The memory is bounded: SERIES_SETS sets of two fixed-size entries (4 MiB, its pages touched as series
 * show up). A series new to a full set replaces the older entry; one whose strings do not fit an entry
 * is generated every time. */
#define SERIES_SETS 8192u
#define SERIES_DATA 240u

struct series_json {
	uint64_t hash;
	uint16_t key_len, text_len;   /* key_len 0: empty */
	char data[SERIES_DATA];       /* the key (series__key), then the JSON: ,"deviceId":"...",...,"threshold":... */
};

struct outrec_json {
	yajl_gen g;
	struct jout out;   /* the print callback's context, pointed at each call's buffer */
	bool keep_series;
	struct series_json (*series)[2];   /* SERIES_SETS, made on first use */
};

struct outrec_json *outrec_json_new(bool keep_series)
{
	struct outrec_json *j = calloc(1, sizeof(*j));
	if(!j) return NULL;
	j->g = yajl_gen_alloc(NULL);
	if(!j->g){
		free(j);
		return NULL;
	}
	/* set once: setting the callback frees yajl's own buffer */
	yajl_gen_config(j->g, yajl_gen_print_callback, jout_print, &j->out);
	j->keep_series = keep_series;
	return j;
}

void outrec_json_free(struct outrec_json *j)
{
	if(!j) return;
	free(j->series);
	yajl_gen_free(j->g);
	free(j);
}

size_t outrec_to_json(const struct outrec *r, char *buf, size_t cap)
{
	struct outrec_json *j = outrec_json_new(false);
	size_t n = j ? outrec_json(j, r, buf, cap) : 0;
	outrec_json_free(j);
	return n;
}

/* What an enriched record's series JSON is made of: its threshold (a presence byte, then the double's
 * bytes) and its strings, each as a presence byte and, when present, its text and NUL (so NULL, "" and
 * a shifted boundary all differ). 0 when they do not fit an entry. */
static size_t series__key(const struct outrec *r, char key[SERIES_DATA])
{
	const char *parts[] = {r->device_id, r->sensor_id, r->unit, r->location, r->zone, r->device_type};
	size_t n = 0;
	key[n++] = (r->flags & OUT_HAS_THRESHOLD) != 0;
	if(key[0]){
		memcpy(key + n, &r->limit, sizeof(r->limit));
		n += sizeof(r->limit);
	}
	for(size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++){
		if(!parts[i]){
			key[n++] = 0;
			continue;
		}
		size_t l = strnlen(parts[i], SERIES_DATA) + 1;
		if(l >= SERIES_DATA - n) return 0;
		key[n++] = 1;
		memcpy(key + n, parts[i], l);
		n += l;
	}
	return n;
}

/* the set this series' JSON is, or would be, kept in; NULL when there is no table */
static struct series_json *series__set(struct outrec_json *j, uint64_t hash)
{
	if(!j->series && !(j->series = calloc(SERIES_SETS, sizeof(*j->series)))) return NULL;
	return j->series[hash & (SERIES_SETS - 1)];
}

static void jout_append(struct jout *o, const char *s, size_t n)
{
	if(o->overflow || n >= o->cap - o->len){
		o->overflow = true;
		return;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

/* the series members of an enriched record: spliced in when kept, else generated (and kept) */
static void put_series(struct outrec_json *j, const struct outrec *r)
{
	char key[SERIES_DATA];
	size_t key_len = j->keep_series ? series__key(r, key) : 0;
	uint64_t hash = key_len ? XXH3_64bits(key, key_len) : 0;
	struct series_json *set = key_len ? series__set(j, hash) : NULL;
	for(int w = 0; set && w < 2; w++){
		const struct series_json *e = &set[w];
		if(e->key_len == key_len && e->hash == hash && !memcmp(e->data, key, key_len)){
			/* yajl is between members of the object: the next key it writes starts with its comma */
			jout_append(&j->out, e->data + key_len, e->text_len);
			return;
		}
	}
	size_t from = j->out.len;
	yajl_gen g = j->g;
	put_str(g, "deviceId", r->device_id);
	put_str(g, "sensorId", r->sensor_id);
	put_str(g, "unit", r->unit);
	put_str(g, "location", r->location);
	put_str(g, "zone", r->zone);
	put_str(g, "deviceType", r->device_type);
	if(r->flags & OUT_HAS_THRESHOLD) put_num(g, "threshold", r->limit);
	size_t text_len = j->out.len - from;
	if(set && !j->out.overflow && text_len <= SERIES_DATA - key_len){
		set[1] = set[0];   /* the set's older entry goes */
		set[0] = (struct series_json){.hash = hash, .key_len = (uint16_t)key_len, .text_len = (uint16_t)text_len};
		memcpy(set[0].data, key, key_len);
		memcpy(set[0].data + key_len, j->out.buf + from, text_len);
	}
}

size_t outrec_json(struct outrec_json *j, const struct outrec *r, char *buf, size_t cap)
{
	if(cap == 0) return 0;
	j->out = (struct jout){.buf = buf, .cap = cap};
	yajl_gen g = j->g;
	yajl_gen_reset(g, NULL);   /* a fresh document, same callback */
	yajl_gen_map_open(g);
	put_id(g, r->id);
	switch(r->kind){
	case REC_ENRICHED:
		put_series(j, r);
		put_num(g, "value", r->value);
		put_int(g, "ts", r->ts_ms);
		put_bool(g, "isAnomaly", (r->flags & OUT_ANOMALY) != 0);
		put_num(g, "zscore", r->score);
		if(r->flags & OUT_TS_MISSING) put_bool(g, "tsMissing", true);
		if(r->flags & OUT_LATE) put_bool(g, "late", true);
		if(r->flags & OUT_UNENRICHED) put_bool(g, "unenriched", true);
		break;
	case REC_ALERT:
		put_str(g, "deviceId", r->device_id);
		put_str(g, "sensorId", r->sensor_id);
		put_str(g, "kind", r->alert_kind == OUT_ALERT_ZSCORE ? "zscore" : "threshold");
		put_str(g, "state", r->alert_state == OUT_ALERT_RESOLVED ? "resolved" : "firing");
		put_num(g, "value", r->value);
		put_num(g, "limit", r->limit);
		put_num(g, "score", r->score);
		put_str(g, "unit", r->unit);
		put_int(g, "ts", r->ts_ms);
		put_str(g, "location", r->location);
		put_str(g, "zone", r->zone);
		break;
	case REC_QUARANTINE:
		put_str(g, "reason", reason_name((enum ip_reason)r->reason));
		put_str(g, "detail", r->detail);
		put_str(g, "deviceId", r->device_id);
		put_str(g, "sensorId", r->sensor_id);
		put_str(g, "topic", r->topic);
		put_str(g, "clientId", r->client_id);
		put_str(g, "username", r->username);
		put_int(g, "arrival", r->arrival_ms);
		put_payload(g, r->payload, r->payload_len);
		if(r->flags & OUT_TRUNCATED) put_int(g, "payloadBytes", r->orig_payload_len);
		break;
	case REC_AGGREGATE:
		put_str(g, "deviceId", r->device_id);
		put_str(g, "sensorId", r->sensor_id);
		put_int(g, "windowStart", r->ts_ms);
		put_int(g, "windowEnd", r->win_end_ms);
		put_int(g, "count", r->count);
		put_num(g, "avg", r->count ? r->sum / r->count : NAN);
		put_num(g, "min", r->min);
		put_num(g, "max", r->max);
		put_num(g, "sum", r->sum);
		put_int(g, "firstTs", r->first_ts_ms);
		put_int(g, "lastTs", r->last_ts_ms);
		put_str(g, "unit", r->unit);
		put_str(g, "location", r->location);
		put_str(g, "zone", r->zone);
		break;
	case REC_RAW:
		put_str(g, "topic", r->topic);
		put_str(g, "clientId", r->client_id);
		put_str(g, "username", r->username);
		put_int(g, "qos", r->qos);
		put_int(g, "arrival", r->arrival_ms);
		put_payload(g, r->payload, r->payload_len);
		break;
	default:
		break;
	}
	yajl_gen_map_close(g);
	if(j->out.overflow) return 0;
	buf[j->out.len] = '\0';
	return j->out.len;
}

static uint64_t hash_parts(const char *a, const char *b, const void *tail, size_t tail_len)
{
	/* ids are short (payload.h caps them at 63 bytes), so one flat buffer and one hash call */
	uint8_t buf[512];
	size_t la = strnlen(a, 200) + 1, lb = strnlen(b, 200) + 1;
	memcpy(buf, a, la);
	memcpy(buf + la, b, lb);
	memcpy(buf + la + lb, tail, tail_len);
	return XXH3_64bits(buf, la + lb + tail_len);
}

uint64_t record_id_reading(const char *device_id, const char *sensor_id, int64_t ts_ms)
{
	int64_t t[2] = {REC_ENRICHED, ts_ms};
	return hash_parts(device_id, sensor_id, t, sizeof(t));
}

uint64_t record_id_alert(const char *device_id, const char *sensor_id, int64_t ts_ms, int kind, int state)
{
	int64_t t[4] = {REC_ALERT, ts_ms, kind, state};
	return hash_parts(device_id, sensor_id, t, sizeof(t));
}

uint64_t record_id_aggregate(const char *device_id, const char *sensor_id, int64_t win_start_ms)
{
	int64_t t[2] = {REC_AGGREGATE, win_start_ms};
	return hash_parts(device_id, sensor_id, t, sizeof(t));
}

uint64_t record_id_lsn(uint16_t kind, uint64_t lsn, uint32_t index)
{
	uint64_t t[3] = {kind, lsn, index};
	return XXH3_64bits(t, sizeof(t));
}
