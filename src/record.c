#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <xxhash.h>

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

/* The id's text form is what consumers deduplicate by: 16 hex digits. */
/* The record's fields go into cJSON by reference (constant keys, strings that outlive the print):
 * one allocation per field instead of three. */
static void add_id(cJSON *o, uint64_t id)
{
	char hex[17];
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)id);
	cJSON_AddItemToObjectCS(o, "id", cJSON_CreateString(hex));
}

static void add_str(cJSON *o, const char *k, const char *v)
{
	if(v) cJSON_AddItemToObjectCS(o, k, cJSON_CreateStringReference(v));
}

static void add_bool(cJSON *o, const char *k, bool v)
{
	cJSON_AddItemToObjectCS(o, k, cJSON_CreateBool(v));
}

/* Numbers are formatted here and handed to cJSON as raw text: cJSON prints every number through
 * sprintf and sscanf with a locale look-up each (about half of its time for these records).
 * Whole numbers (timestamps, counts) print exactly; others take 15 significant digits when those
 * read back to the same double, else 17, which is what cJSON itself does. */
static void add_num(cJSON *o, const char *k, double v)
{
	if(!isfinite(v)) return;
	char text[32];
	if(fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v){
		snprintf(text, sizeof(text), "%lld", (long long)v);
	}else{
		snprintf(text, sizeof(text), "%.15g", v);
		if(strtod(text, NULL) != v) snprintf(text, sizeof(text), "%.17g", v);
	}
	cJSON_AddItemToObjectCS(o, k, cJSON_CreateRaw(text));
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
static void add_payload(cJSON *o, const uint8_t *p, size_t n)
{
	if(utf8_valid(p, n)){
		char *s = cJSON_malloc(n + 1);
		if(!s) return;
		memcpy(s, p, n);
		s[n] = '\0';
		cJSON_AddItemToObjectCS(o, "payload", cJSON_CreateString(s));
		cJSON_free(s);
		return;
	}
	static const char digits[] = "0123456789abcdef";
	char *h = cJSON_malloc(2 * n + 1);
	if(!h) return;
	for(size_t i = 0; i < n; i++){
		h[2 * i] = digits[p[i] >> 4];
		h[2 * i + 1] = digits[p[i] & 15];
	}
	h[2 * n] = '\0';
	cJSON_AddItemToObjectCS(o, "payloadHex", cJSON_CreateString(h));
	cJSON_free(h);
}

size_t outrec_to_json(const struct outrec *r, char *buf, size_t cap)
{
	cJSON *o = cJSON_CreateObject();
	if(!o) return 0;
	add_id(o, r->id);
	switch(r->kind){
	case REC_ENRICHED:
		add_str(o, "deviceId", r->device_id);
		add_str(o, "sensorId", r->sensor_id);
		add_num(o, "value", r->value);
		add_str(o, "unit", r->unit);
		add_num(o, "ts", (double)r->ts_ms);
		add_str(o, "location", r->location);
		add_str(o, "zone", r->zone);
		add_str(o, "deviceType", r->device_type);
		if(r->flags & OUT_HAS_THRESHOLD) add_num(o, "threshold", r->limit);
		add_bool(o, "isAnomaly", (r->flags & OUT_ANOMALY) != 0);
		add_num(o, "zscore", r->score);
		if(r->flags & OUT_TS_MISSING) add_bool(o, "tsMissing", true);
		if(r->flags & OUT_LATE) add_bool(o, "late", true);
		if(r->flags & OUT_UNENRICHED) add_bool(o, "unenriched", true);
		break;
	case REC_ALERT:
		add_str(o, "deviceId", r->device_id);
		add_str(o, "sensorId", r->sensor_id);
		add_str(o, "kind", r->alert_kind == OUT_ALERT_ZSCORE ? "zscore" : "threshold");
		add_str(o, "state", r->alert_state == OUT_ALERT_RESOLVED ? "resolved" : "firing");
		add_num(o, "value", r->value);
		add_num(o, "limit", r->limit);
		add_num(o, "score", r->score);
		add_str(o, "unit", r->unit);
		add_num(o, "ts", (double)r->ts_ms);
		add_str(o, "location", r->location);
		add_str(o, "zone", r->zone);
		break;
	case REC_QUARANTINE:
		add_str(o, "reason", reason_name((enum ip_reason)r->reason));
		add_str(o, "detail", r->detail);
		add_str(o, "deviceId", r->device_id);
		add_str(o, "sensorId", r->sensor_id);
		add_str(o, "topic", r->topic);
		add_str(o, "clientId", r->client_id);
		add_str(o, "username", r->username);
		add_num(o, "arrival", (double)r->arrival_ms);
		add_payload(o, r->payload, r->payload_len);
		if(r->flags & OUT_TRUNCATED) add_num(o, "payloadBytes", r->orig_payload_len);
		break;
	case REC_AGGREGATE:
		add_str(o, "deviceId", r->device_id);
		add_str(o, "sensorId", r->sensor_id);
		add_num(o, "windowStart", (double)r->ts_ms);
		add_num(o, "windowEnd", (double)r->win_end_ms);
		add_num(o, "count", r->count);
		add_num(o, "avg", r->count ? r->sum / r->count : NAN);
		add_num(o, "min", r->min);
		add_num(o, "max", r->max);
		add_num(o, "sum", r->sum);
		add_num(o, "firstTs", (double)r->first_ts_ms);
		add_num(o, "lastTs", (double)r->last_ts_ms);
		add_str(o, "unit", r->unit);
		add_str(o, "location", r->location);
		add_str(o, "zone", r->zone);
		break;
	case REC_RAW:
		add_str(o, "topic", r->topic);
		add_str(o, "clientId", r->client_id);
		add_str(o, "username", r->username);
		add_num(o, "qos", r->qos);
		add_num(o, "arrival", (double)r->arrival_ms);
		add_payload(o, r->payload, r->payload_len);
		break;
	default:
		break;
	}
	size_t n = 0;
	if(cJSON_PrintPreallocated(o, buf, (int)cap, false)) n = strlen(buf);
	cJSON_Delete(o);
	return n;
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
