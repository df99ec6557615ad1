/* Telemetry payload parser. cJSON builds the tree; this file walks it once, copying what it needs
 * into the caller's ip_reading array, and allocates nothing of its own. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "payload.h"

/* Numeric ts below this are seconds, at or above it milliseconds: 1e11 s is in the year 5138,
 * 1e11 ms in 1973, so neither reading of a real device clock is ambiguous. */
#define TS_SECONDS_BELOW 1e11

/* RFC 8428 section 4.5.3: SenML times below 2^28 s are relative to "now". */
#define SENML_RELATIVE_BELOW 268435456.0
/* RFC 8428 section 4.4: a pack from a newer version must not be used. */
#define SENML_VERSION 10

#define DETAIL_MAX 96
_Static_assert(sizeof(((struct ip_reading *)0)->detail) == DETAIL_MAX, "SenML base faults are copied into detail");

static void set_detail(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_detail(char *dst, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, n, fmt, ap);
	va_end(ap);
}

static inline int json_type(const cJSON *item)
{
	return item->type & 0xFF;
}

static inline bool is_number(const cJSON *item)
{
	return json_type(item) == cJSON_Number;
}

static inline bool is_string(const cJSON *item)
{
	return json_type(item) == cJSON_String && item->valuestring != NULL;
}

/* For details: "value is a string". */
static const char *type_name(const cJSON *item)
{
	switch(json_type(item)){
		case cJSON_False:
		case cJSON_True:
			return "a boolean";
		case cJSON_NULL:
			return "null";
		case cJSON_Number:
			return "a number";
		case cJSON_String:
			return "a string";
		case cJSON_Array:
			return "an array";
		case cJSON_Object:
			return "an object";
		default:
			return "of an unknown type";
	}
}

/* Strict UTF-8 without C0/C1 controls or DEL. Ids and units end up as Kafka keys, SQL text,
 * MQTT topic levels and log lines: invalid UTF-8 would only be refused later, by a sink, and
 * control characters would let a device forge log lines. With `id`, the MQTT topic separator and
 * wildcards are refused too, because a device id becomes a topic level (alerts/{deviceId}). */
static bool text_ok(const unsigned char *s, size_t len, bool id)
{
	size_t i = 0;

	while(i < len){
		unsigned char c = s[i];
		size_t more;
		unsigned char lo = 0x80, hi = 0xBF;

		if(c < 0x80){
			if(c < 0x20 || c == 0x7F) return false;
			if(id && (c == '/' || c == '+' || c == '#')) return false;
			i++;
			continue;
		}
		if(c < 0xC2){
			return false;               /* stray continuation byte or overlong 2-byte form */
		}else if(c < 0xE0){
			more = 1;
			if(c == 0xC2) lo = 0xA0;    /* U+0080..U+009F are the C1 controls */
		}else if(c < 0xF0){
			more = 2;
			if(c == 0xE0) lo = 0xA0;    /* overlong */
			if(c == 0xED) hi = 0x9F;    /* UTF-16 surrogates */
		}else if(c < 0xF5){
			more = 3;
			if(c == 0xF0) lo = 0x90;    /* overlong */
			if(c == 0xF4) hi = 0x8F;    /* above U+10FFFF */
		}else{
			return false;
		}
		if(len - i <= more) return false;
		if(s[i+1] < lo || s[i+1] > hi) return false;
		for(size_t k = 2; k <= more; k++){
			if(s[i+k] < 0x80 || s[i+k] > 0xBF) return false;
		}
		i += more + 1;
	}
	return true;
}

/* Copies an id of known length into dst after checking it; field names it in the detail.
 * dst is "" when the id is refused. */
static enum ip_reason id_take(char dst[IP_ID_MAX], const char *src, size_t len, const char *field,
		char *detail, size_t dlen)
{
	dst[0] = '\0';
	if(len == 0){
		set_detail(detail, dlen, "%s is empty", field);
		return IP_R_ID_INVALID;
	}
	if(len >= IP_ID_MAX){
		set_detail(detail, dlen, "%s is longer than %d bytes", field, IP_ID_MAX - 1);
		return IP_R_ID_INVALID;
	}
	if(!text_ok((const unsigned char *)src, len, true)){
		set_detail(detail, dlen, "%s contains a control character, '/', '+', '#' or invalid UTF-8", field);
		return IP_R_ID_INVALID;
	}
	memcpy(dst, src, len);
	dst[len] = '\0';
	return IP_OK;
}

static inline bool id_ascii(unsigned char c)
{
	return c >= 0x20 && c < 0x7F && c != '/' && c != '+' && c != '#';
}

/* An id given as a JSON value ("deviceId", "sensorId", a readings key). */
static enum ip_reason id_str(char dst[IP_ID_MAX], const char *src, const char *field, char *detail, size_t dlen)
{
	/* The common plain-ASCII id is measured, checked and copied in one pass; anything else
	 * (empty, too long, UTF-8, refused) takes the general path, which never measures a hostile
	 * id past the limit. The loop stops at the NUL too, since NUL is no id_ascii character. */
	size_t i;

	for(i = 0; i < IP_ID_MAX && id_ascii((unsigned char)src[i]); i++){
		dst[i] = src[i];
	}
	if(i > 0 && i < IP_ID_MAX && src[i] == '\0'){
		dst[i] = '\0';
		return IP_OK;
	}
	return id_take(dst, src, strnlen(src, IP_ID_MAX), field, detail, dlen);
}

static enum ip_reason id_item(char dst[IP_ID_MAX], const cJSON *item, const char *field,
		char *detail, size_t dlen)
{
	if(!is_string(item)){
		set_detail(detail, dlen, "%s is %s, not a string", field, type_name(item));
		return IP_R_WRONG_TYPE;
	}
	return id_str(dst, item->valuestring, field, detail, dlen);
}

/* A unit: free text for units_convert, but bounded and printable. "" means none reported. */
static enum ip_reason unit_item(char dst[IP_UNIT_MAX], const cJSON *item, const char *field,
		char *detail, size_t dlen)
{
	size_t len;

	if(!is_string(item)){
		set_detail(detail, dlen, "%s is %s, not a string", field, type_name(item));
		return IP_R_WRONG_TYPE;
	}
	len = strnlen(item->valuestring, IP_UNIT_MAX);
	if(len >= IP_UNIT_MAX){
		set_detail(detail, dlen, "%s is longer than %d bytes", field, IP_UNIT_MAX - 1);
		return IP_R_ID_INVALID;
	}
	if(!text_ok((const unsigned char *)item->valuestring, len, false)){
		set_detail(detail, dlen, "%s contains a control character or invalid UTF-8", field);
		return IP_R_ID_INVALID;
	}
	memcpy(dst, item->valuestring, len + 1);
	return IP_OK;
}

static enum ip_reason value_item(double *v, const cJSON *item, const char *field, char *detail, size_t dlen)
{
	if(!is_number(item)){
		set_detail(detail, dlen, "%s is %s, not a number", field, type_name(item));
		return IP_R_WRONG_TYPE;
	}
	/* cJSON reads 1e999 as inf rather than failing */
	if(!isfinite(item->valuedouble)){
		set_detail(detail, dlen, "%s is not a finite number", field);
		return IP_R_NON_FINITE_VALUE;
	}
	*v = item->valuedouble;
	return IP_OK;
}

static bool digits(const char *s, int n, int *out)
{
	int v = 0;

	/* s is NUL-terminated and NUL is no digit, so this never reads past its end */
	for(int i = 0; i < n; i++){
		if(s[i] < '0' || s[i] > '9') return false;
		v = v*10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

static int days_in_month(int y, int m)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if(m == 2 && y%4 == 0 && (y%100 != 0 || y%400 == 0)) return 29;
	return days[m-1];
}

bool payload_rfc3339_ms(const char *s, int64_t *ms)
{
	int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	int frac = 0, nfrac = 0;
	const char *p;
	struct tm tm;
	time_t t;
	int64_t v;

	if(!digits(s, 4, &y) || s[4] != '-'
			|| !digits(s+5, 2, &mo) || s[7] != '-'
			|| !digits(s+8, 2, &d)
			|| (s[10] != 'T' && s[10] != 't')
			|| !digits(s+11, 2, &h) || s[13] != ':'
			|| !digits(s+14, 2, &mi) || s[16] != ':'
			|| !digits(s+17, 2, &sec)){
		return false;
	}
	p = s + 19;
	if(*p == '.'){
		p++;
		while(*p >= '0' && *p <= '9'){
			if(nfrac < 3) frac = frac*10 + (*p - '0');
			/* nanoseconds are the finest any clock sends; more digits is noise or an attack */
			if(++nfrac > 9) return false;
			p++;
		}
		if(nfrac == 0) return false;
		for(int k = nfrac; k < 3; k++) frac *= 10;
	}
	if(*p == 'Z' || *p == 'z'){
		p++;
	}else if(*p == '+' || *p == '-'){
		sign = *p == '+' ? 1 : -1;
		if(!digits(p+1, 2, &oh) || p[3] != ':' || !digits(p+4, 2, &om)) return false;
		if(oh > 23 || om > 59) return false;
		p += 6;
	}else{
		return false;
	}
	if(*p != '\0') return false;

	if(mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return false;
	if(h > 23 || mi > 59 || sec > 60) return false;
	if(sec == 60){
		/* A leap second has no POSIX time of its own; keep it inside its minute so it sorts
		 * before the next one instead of colliding with it. */
		sec = 59;
		frac = 999;
	}

	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	v = ((int64_t)t - sign*(int64_t)(oh*3600 + om*60))*1000 + frac;
	/* year 0000-1969 is negative; -1 from timegm (an error) is caught here as well */
	if(v < 0 || v > IP_TS_MAX_MS) return false;
	*ms = v;
	return true;
}

/* A "ts" of the JSON forms: seconds or ms since the epoch, or RFC 3339. */
static enum ip_reason ts_item(int64_t *ms, const cJSON *item, const char *field, char *detail, size_t dlen)
{
	double d;

	if(is_string(item)){
		if(!payload_rfc3339_ms(item->valuestring, ms)){
			set_detail(detail, dlen, "%s is not an RFC 3339 date-time between 1970 and 9999", field);
			return IP_R_BAD_TIMESTAMP;
		}
		return IP_OK;
	}
	if(!is_number(item)){
		set_detail(detail, dlen, "%s is %s, not a number or an RFC 3339 string", field, type_name(item));
		return IP_R_BAD_TIMESTAMP;
	}
	d = item->valuedouble;
	if(!isfinite(d) || d < 0){
		set_detail(detail, dlen, "%s is negative or not finite", field);
		return IP_R_BAD_TIMESTAMP;
	}
	if(d < TS_SECONDS_BELOW){
		/* round: 1673456789.123 is 1673456789122.9999 once multiplied */
		*ms = llround(d*1000.0);
		return IP_OK;
	}
	if(d > (double)IP_TS_MAX_MS){
		set_detail(detail, dlen, "%s is after the year 9999", field);
		return IP_R_BAD_TIMESTAMP;
	}
	*ms = llround(d);
	return IP_OK;
}

static void reading_init(struct ip_reading *r, int64_t now_ms)
{
	r->device_id[0] = '\0';
	r->sensor_id[0] = '\0';
	r->unit[0] = '\0';
	r->value = 0.0;
	r->ts_ms = now_ms;
	r->ts_missing = true;
	r->reason = IP_OK;
	r->detail[0] = '\0';
}

static enum ip_reason refuse(struct payload_result *res, enum ip_reason reason)
{
	res->reason = reason;
	res->count = 0;
	return reason;
}

static size_t count_children(const cJSON *item)
{
	size_t n = 0;

	for(const cJSON *c = item->child; c; c = c->next) n++;
	return n;
}

/* Keys that must not repeat: with two "value"s the reading depends on which one a parser keeps. */
static enum ip_reason duplicate(struct payload_result *res, const char *key)
{
	set_detail(res->detail, sizeof(res->detail), "duplicate key \"%s\"", key);
	return refuse(res, IP_R_MALFORMED_PAYLOAD);
}

/* ---- the JSON object forms ---- */

struct obj_fields {
	const cJSON *device, *sensor, *value, *readings, *ts, *unit;
};

/* strcmp(key, lit) == 0, inlined: keys are short and compared on every message */
static inline bool key_is(const char *key, const char *lit)
{
	while(*lit != '\0' && *key == *lit){
		key++;
		lit++;
	}
	return *key == *lit;
}

/* The slot for a known key of the top-level object, NULL for any other key. */
static const cJSON **obj_slot(struct obj_fields *f, const char *key)
{
	switch(key[0]){
		case 'd':
			return key_is(key + 1, "eviceId") ? &f->device : NULL;
		case 's':
			return key_is(key + 1, "ensorId") ? &f->sensor : NULL;
		case 'v':
			return key_is(key + 1, "alue") ? &f->value : NULL;
		case 'r':
			return key_is(key + 1, "eadings") ? &f->readings : NULL;
		case 't':
			return key_is(key + 1, "s") ? &f->ts : NULL;
		case 'u':
			return key_is(key + 1, "nit") ? &f->unit : NULL;
		default:
			return NULL;
	}
}

/* Fields shared by every reading of an object payload; a fault here refuses the whole message
 * because it would be the same fault in each reading. */
static enum ip_reason obj_common(const struct obj_fields *f, struct ip_reading *r, int64_t now_ms,
		struct payload_result *res)
{
	enum ip_reason rc;
	char *dt = res->detail;
	size_t dl = sizeof(res->detail);

	reading_init(r, now_ms);
	if(f->device){
		rc = id_item(r->device_id, f->device, "deviceId", dt, dl);
		if(rc != IP_OK) return refuse(res, rc);
	}
	if(f->unit){
		rc = unit_item(r->unit, f->unit, "unit", dt, dl);
		if(rc != IP_OK) return refuse(res, rc);
	}
	if(f->ts){
		rc = ts_item(&r->ts_ms, f->ts, "ts", dt, dl);
		if(rc != IP_OK) return refuse(res, rc);
		r->ts_missing = false;
	}
	return IP_OK;
}

static enum ip_reason parse_single(const struct obj_fields *f, int64_t now_ms,
		struct ip_reading *out, size_t cap, struct payload_result *res)
{
	enum ip_reason rc;
	struct ip_reading *r = out;

	res->form = IP_FORM_SINGLE;
	if(cap < 1){
		set_detail(res->detail, sizeof(res->detail), "1 reading, room for 0");
		return refuse(res, IP_R_TOO_MANY_READINGS);
	}
	rc = obj_common(f, r, now_ms, res);
	if(rc != IP_OK) return rc;
	if(f->sensor){
		rc = id_item(r->sensor_id, f->sensor, "sensorId", res->detail, sizeof(res->detail));
		if(rc != IP_OK) return refuse(res, rc);
	}
	rc = value_item(&r->value, f->value, "value", res->detail, sizeof(res->detail));
	if(rc != IP_OK) return refuse(res, rc);
	res->count = 1;
	return IP_OK;
}

/* One entry of "readings": a number, or {"value":..,"unit":..,"ts":..}. Returns a message-level
 * fault only (a duplicate key); the reading's own fault goes into r. */
static enum ip_reason parse_entry(const cJSON *e, struct ip_reading *r, struct payload_result *res)
{
	const cJSON *value = NULL, *unit = NULL, *ts = NULL;

	if(is_number(e)){
		r->reason = value_item(&r->value, e, "value", r->detail, sizeof(r->detail));
		return IP_OK;
	}
	if(json_type(e) != cJSON_Object){
		r->reason = IP_R_WRONG_TYPE;
		set_detail(r->detail, sizeof(r->detail), "value is %s, not a number or an object", type_name(e));
		return IP_OK;
	}
	for(const cJSON *c = e->child; c; c = c->next){
		const cJSON **slot;

		if(key_is(c->string, "value")){
			slot = &value;
		}else if(key_is(c->string, "unit")){
			slot = &unit;
		}else if(key_is(c->string, "ts")){
			slot = &ts;
		}else{
			continue;
		}
		if(*slot) return duplicate(res, c->string);
		*slot = c;
	}
	if(!value){
		r->reason = IP_R_MISSING_FIELD;
		set_detail(r->detail, sizeof(r->detail), "value is missing");
		return IP_OK;
	}
	r->reason = value_item(&r->value, value, "value", r->detail, sizeof(r->detail));
	if(r->reason != IP_OK) return IP_OK;
	if(unit){
		r->reason = unit_item(r->unit, unit, "unit", r->detail, sizeof(r->detail));
		if(r->reason != IP_OK) return IP_OK;
	}
	if(ts){
		r->reason = ts_item(&r->ts_ms, ts, "ts", r->detail, sizeof(r->detail));
		if(r->reason != IP_OK) return IP_OK;
		r->ts_missing = false;
	}
	return IP_OK;
}

static enum ip_reason parse_multi(const struct obj_fields *f, int64_t now_ms,
		struct ip_reading *out, size_t cap, struct payload_result *res)
{
	struct ip_reading common;
	enum ip_reason rc;
	size_t n, i = 0;

	res->form = IP_FORM_MULTI;
	if(json_type(f->readings) != cJSON_Object){
		set_detail(res->detail, sizeof(res->detail), "readings is %s, not an object", type_name(f->readings));
		return refuse(res, IP_R_WRONG_TYPE);
	}
	if(f->sensor){
		/* every key of "readings" is a sensor id: a second one would be ambiguous */
		set_detail(res->detail, sizeof(res->detail), "sensorId and readings together");
		return refuse(res, IP_R_MALFORMED_PAYLOAD);
	}
	n = count_children(f->readings);
	if(n == 0){
		set_detail(res->detail, sizeof(res->detail), "readings is empty");
		return refuse(res, IP_R_MALFORMED_PAYLOAD);
	}
	if(n > cap){
		set_detail(res->detail, sizeof(res->detail), "%zu readings, room for %zu", n, cap);
		return refuse(res, IP_R_TOO_MANY_READINGS);
	}
	rc = obj_common(f, &common, now_ms, res);
	if(rc != IP_OK) return rc;

	for(const cJSON *e = f->readings->child; e; e = e->next, i++){
		struct ip_reading *r = &out[i];
		const char *key = e->string;

		/* device, unit and ts as in the message; the fields that differ are written below */
		memcpy(r->device_id, common.device_id, strlen(common.device_id) + 1);
		memcpy(r->unit, common.unit, strlen(common.unit) + 1);
		r->value = 0.0;
		r->ts_ms = common.ts_ms;
		r->ts_missing = common.ts_missing;
		r->detail[0] = '\0';
		r->reason = id_str(r->sensor_id, key, "sensor id (readings key)", r->detail, sizeof(r->detail));
		if(r->reason != IP_OK) continue;
		rc = parse_entry(e, r, res);
		if(rc != IP_OK) return rc;
	}
	res->count = n;
	return IP_OK;
}

static enum ip_reason parse_object(const cJSON *root, int64_t now_ms,
		struct ip_reading *out, size_t cap, struct payload_result *res)
{
	struct obj_fields f = {0};

	for(const cJSON *c = root->child; c; c = c->next){
		const cJSON **slot = obj_slot(&f, c->string);

		if(!slot) continue;   /* unknown keys are the device's business */
		if(*slot) return duplicate(res, c->string);
		*slot = c;
	}
	if(f.value && f.readings){
		set_detail(res->detail, sizeof(res->detail), "value and readings together");
		return refuse(res, IP_R_MALFORMED_PAYLOAD);
	}
	if(f.value) return parse_single(&f, now_ms, out, cap, res);
	if(f.readings) return parse_multi(&f, now_ms, out, cap, res);
	if(f.device || f.sensor || f.ts || f.unit){
		/* a reading's other fields without its value: the value is what is missing, as for a
		 * readings entry or a SenML record without one */
		set_detail(res->detail, sizeof(res->detail), "no value (nor readings)");
		return refuse(res, IP_R_MISSING_FIELD);
	}
	set_detail(res->detail, sizeof(res->detail), "object has neither value nor readings");
	return refuse(res, IP_R_MALFORMED_PAYLOAD);
}

/* ---- SenML ---- */

/* Base fields carry over to the records after the one holding them (RFC 8428 section 4.1), and
 * so does a fault in one: each later record is refused for it until a valid base replaces it. */
struct senml_base {
	const char *bn;             /* NULL: no base name */
	char device[IP_ID_MAX];     /* bn without its trailing ':' or '/' */
	double bt, bv;
	bool has_bt, has_bv;
	const char *bu;             /* NULL: no base unit; validated, fits IP_UNIT_MAX */
	enum ip_reason bn_err, bt_err, bu_err, bv_err;
	char bn_why[DETAIL_MAX], bt_why[DETAIL_MAX], bu_why[DETAIL_MAX], bv_why[DETAIL_MAX];
};

struct senml_fields {
	const cJSON *bn, *bt, *bu, *bv, *bver, *n, *u, *v, *vs, *vb, *vd, *t;
};

/* The slot for a SenML label, or NULL when it is one we ignore (bs, s, ut, extensions). */
static const cJSON **senml_slot(struct senml_fields *f, const char *key)
{
	switch(key[0]){
		case 'b':
			if(key[1] == 'n' && key[2] == '\0') return &f->bn;
			if(key[1] == 't' && key[2] == '\0') return &f->bt;
			if(key[1] == 'u' && key[2] == '\0') return &f->bu;
			if(key[1] == 'v' && key[2] == '\0') return &f->bv;
			if(key_is(key, "bver")) return &f->bver;
			return NULL;
		case 'n':
			return key[1] == '\0' ? &f->n : NULL;
		case 'u':
			return key[1] == '\0' ? &f->u : NULL;
		case 't':
			return key[1] == '\0' ? &f->t : NULL;
		case 'v':
			if(key[1] == '\0') return &f->v;
			if(key[2] != '\0') return NULL;
			if(key[1] == 's') return &f->vs;
			if(key[1] == 'b') return &f->vb;
			if(key[1] == 'd') return &f->vd;
			return NULL;
		default:
			return NULL;
	}
}

static inline bool name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		|| c == '-' || c == ':' || c == '.' || c == '/' || c == '_';
}

static inline bool name_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 8428 section 4.5.1: the concatenated name uses only A-Z a-z 0-9 - : . / _ and starts
 * with a letter or digit. `first` says whether s starts the name. */
static bool name_ok(const char *s, size_t len, bool first)
{
	if(first && len > 0 && !name_start((unsigned char)s[0])) return false;
	for(size_t i = 0; i < len; i++){
		if(!name_char((unsigned char)s[i])) return false;
	}
	return true;
}

static void senml_base_name(struct senml_base *b, const cJSON *item)
{
	const char *s;
	size_t len;

	b->bn = NULL;
	b->bn_err = IP_OK;
	if(!is_string(item)){
		b->bn_err = IP_R_WRONG_TYPE;
		set_detail(b->bn_why, sizeof(b->bn_why), "bn is %s, not a string", type_name(item));
		return;
	}
	s = item->valuestring;
	/* room for IP_ID_MAX-1 id bytes and the separator */
	len = strnlen(s, IP_ID_MAX + 1);
	if(len == 0) return;   /* "" prefixes nothing: the same as no base name */
	if(!name_ok(s, len, true)){
		b->bn_err = IP_R_ID_INVALID;
		set_detail(b->bn_why, sizeof(b->bn_why), "bn has a character outside the SenML name set");
		return;
	}
	if(s[len-1] == ':' || s[len-1] == '/') len--;
	b->bn_err = id_take(b->device, s, len, "device id (bn)", b->bn_why, sizeof(b->bn_why));
	if(b->bn_err == IP_OK) b->bn = s;
}

static void senml_base_update(struct senml_base *b, const struct senml_fields *f)
{
	if(f->bn) senml_base_name(b, f->bn);
	if(f->bt){
		b->has_bt = false;
		b->bt_err = IP_OK;
		if(!is_number(f->bt)){
			b->bt_err = IP_R_BAD_TIMESTAMP;
			set_detail(b->bt_why, sizeof(b->bt_why), "bt is %s, not a number", type_name(f->bt));
		}else if(!isfinite(f->bt->valuedouble)){
			b->bt_err = IP_R_BAD_TIMESTAMP;
			set_detail(b->bt_why, sizeof(b->bt_why), "bt is not a finite number");
		}else{
			b->bt = f->bt->valuedouble;
			b->has_bt = true;
		}
	}
	if(f->bu){
		char tmp[IP_UNIT_MAX];

		b->bu = NULL;
		b->bu_err = unit_item(tmp, f->bu, "bu", b->bu_why, sizeof(b->bu_why));
		if(b->bu_err == IP_OK && tmp[0] != '\0') b->bu = f->bu->valuestring;
	}
	if(f->bv){
		b->has_bv = false;
		b->bv_err = value_item(&b->bv, f->bv, "bv", b->bv_why, sizeof(b->bv_why));
		if(b->bv_err == IP_OK) b->has_bv = true;
	}
}

static enum ip_reason senml_fail(struct ip_reading *r, enum ip_reason reason, const char *why)
{
	r->reason = reason;
	memcpy(r->detail, why, strlen(why) + 1);
	return reason;
}

/* Device and sensor ids from bn + n. */
static enum ip_reason senml_names(const struct senml_base *b, const struct senml_fields *f, struct ip_reading *r)
{
	const char *n = "";
	size_t len;

	if(b->bn_err != IP_OK) return senml_fail(r, b->bn_err, b->bn_why);
	if(f->n){
		if(!is_string(f->n)){
			r->reason = IP_R_WRONG_TYPE;
			set_detail(r->detail, sizeof(r->detail), "n is %s, not a string", type_name(f->n));
			return r->reason;
		}
		n = f->n->valuestring;
	}
	/* "device:sensor" fits in two ids and a separator; anything longer is refused below */
	len = strnlen(n, 2*IP_ID_MAX);

	if(b->bn){
		memcpy(r->device_id, b->device, strlen(b->device) + 1);
		if(len == 0) return IP_OK;   /* the base name alone: the device's default sensor */
		if(!name_ok(n, len, false)){
			r->reason = IP_R_ID_INVALID;
			set_detail(r->detail, sizeof(r->detail), "n has a character outside the SenML name set");
			return r->reason;
		}
		r->reason = id_take(r->sensor_id, n, len, "sensor id (n)", r->detail, sizeof(r->detail));
		return r->reason;
	}

	if(len == 0){
		r->reason = IP_R_MISSING_FIELD;
		set_detail(r->detail, sizeof(r->detail), "n is missing and there is no bn");
		return r->reason;
	}
	if(!name_ok(n, len, true)){
		r->reason = IP_R_ID_INVALID;
		set_detail(r->detail, sizeof(r->detail), "n has a character outside the SenML name set");
		return r->reason;
	}
	/* no base name: "device:sensor" or "device/sensor", split at the last separator */
	for(size_t i = len; i-- > 0;){
		if(n[i] == ':' || n[i] == '/'){
			/* i > 0: a name starts with a letter or digit */
			r->reason = id_take(r->device_id, n, i, "device id (n)", r->detail, sizeof(r->detail));
			if(r->reason != IP_OK) return r->reason;
			if(i + 1 == len) return IP_OK;
			r->reason = id_take(r->sensor_id, n + i + 1, len - i - 1, "sensor id (n)",
					r->detail, sizeof(r->detail));
			return r->reason;
		}
	}
	r->reason = id_take(r->sensor_id, n, len, "sensor id (n)", r->detail, sizeof(r->detail));
	return r->reason;
}

static enum ip_reason senml_value(const struct senml_base *b, const struct senml_fields *f, struct ip_reading *r)
{
	const cJSON *other = f->vs ? f->vs : f->vb ? f->vb : f->vd;

	if(f->v && other){
		r->reason = IP_R_WRONG_TYPE;
		set_detail(r->detail, sizeof(r->detail), "v together with %s: one value field per record",
				other->string);
		return r->reason;
	}
	if(other){
		r->reason = IP_R_WRONG_TYPE;
		set_detail(r->detail, sizeof(r->detail), "%s instead of v: only numeric values are supported",
				other->string);
		return r->reason;
	}
	if(!f->v){
		r->reason = IP_R_MISSING_FIELD;
		set_detail(r->detail, sizeof(r->detail), "v is missing");
		return r->reason;
	}
	r->reason = value_item(&r->value, f->v, "v", r->detail, sizeof(r->detail));
	if(r->reason != IP_OK) return r->reason;
	if(b->bv_err != IP_OK) return senml_fail(r, b->bv_err, b->bv_why);
	if(b->has_bv){
		r->value += b->bv;
		if(!isfinite(r->value)){
			r->reason = IP_R_NON_FINITE_VALUE;
			set_detail(r->detail, sizeof(r->detail), "bv + v is not a finite number");
			return r->reason;
		}
	}
	return IP_OK;
}

static enum ip_reason senml_unit(const struct senml_base *b, const struct senml_fields *f, struct ip_reading *r)
{
	size_t len;

	if(f->u){
		r->reason = unit_item(r->unit, f->u, "u", r->detail, sizeof(r->detail));
		return r->reason;
	}
	if(b->bu_err != IP_OK) return senml_fail(r, b->bu_err, b->bu_why);
	if(b->bu){
		len = strlen(b->bu);   /* validated shorter than IP_UNIT_MAX */
		memcpy(r->unit, b->bu, len + 1);
	}
	return IP_OK;
}

static enum ip_reason senml_time(const struct senml_base *b, const struct senml_fields *f, int64_t now_ms,
		struct ip_reading *r)
{
	double t = 0.0, ms;

	if(f->t){
		if(!is_number(f->t)){
			r->reason = IP_R_BAD_TIMESTAMP;
			set_detail(r->detail, sizeof(r->detail), "t is %s, not a number", type_name(f->t));
			return r->reason;
		}
		t = f->t->valuedouble;
	}
	if(b->bt_err != IP_OK) return senml_fail(r, b->bt_err, b->bt_why);
	if(!f->t && !b->has_bt){
		/* RFC 8428 reads no time as "roughly now": the arrival time, flagged */
		r->ts_missing = true;
		r->ts_ms = now_ms;
		return IP_OK;
	}
	if(b->has_bt) t += b->bt;
	if(!isfinite(t)){
		r->reason = IP_R_BAD_TIMESTAMP;
		set_detail(r->detail, sizeof(r->detail), "bt + t is not a finite number");
		return r->reason;
	}
	ms = t*1000.0;
	if(t < SENML_RELATIVE_BELOW) ms += (double)now_ms;
	if(!(ms >= 0.0 && ms <= (double)IP_TS_MAX_MS)){
		r->reason = IP_R_BAD_TIMESTAMP;
		set_detail(r->detail, sizeof(r->detail), "bt + t is before 1970 or after 9999");
		return r->reason;
	}
	r->ts_missing = false;
	r->ts_ms = llround(ms);
	return IP_OK;
}

static enum ip_reason parse_senml(const cJSON *root, int64_t now_ms,
		struct ip_reading *out, size_t cap, struct payload_result *res)
{
	struct senml_base base;
	size_t n, i = 0;

	res->form = IP_FORM_SENML;
	n = count_children(root);
	if(n == 0){
		set_detail(res->detail, sizeof(res->detail), "empty array");
		return refuse(res, IP_R_MALFORMED_PAYLOAD);
	}
	if(n > cap){
		set_detail(res->detail, sizeof(res->detail), "%zu SenML records, room for %zu", n, cap);
		return refuse(res, IP_R_TOO_MANY_READINGS);
	}

	base.bn = NULL;
	base.bu = NULL;
	base.has_bt = base.has_bv = false;
	base.bn_err = base.bt_err = base.bu_err = base.bv_err = IP_OK;

	for(const cJSON *rec = root->child; rec; rec = rec->next, i++){
		struct senml_fields f = {0};
		struct ip_reading *r = &out[i];

		if(json_type(rec) != cJSON_Object){
			set_detail(res->detail, sizeof(res->detail), "SenML record %zu is %s, not an object",
					i, type_name(rec));
			return refuse(res, IP_R_MALFORMED_PAYLOAD);
		}
		for(const cJSON *c = rec->child; c; c = c->next){
			const char *key = c->string;
			const cJSON **slot = senml_slot(&f, key);
			size_t klen;

			if(slot){
				if(*slot) return duplicate(res, key);
				*slot = c;
				continue;
			}
			klen = strlen(key);
			if(klen > 0 && key[klen-1] == '_'){
				/* RFC 8428 section 4.4: an unknown must-understand label is an error */
				set_detail(res->detail, sizeof(res->detail),
						"SenML record %zu has a must-understand label (ending in '_') not supported", i);
				return refuse(res, IP_R_MALFORMED_PAYLOAD);
			}
		}
		if(f.bver){
			if(!is_number(f.bver) || !(f.bver->valuedouble >= 1.0)){
				set_detail(res->detail, sizeof(res->detail), "bver is not a positive number");
				return refuse(res, IP_R_MALFORMED_PAYLOAD);
			}
			if(f.bver->valuedouble > SENML_VERSION){
				set_detail(res->detail, sizeof(res->detail), "SenML version %g is newer than %d",
						f.bver->valuedouble, SENML_VERSION);
				return refuse(res, IP_R_MALFORMED_PAYLOAD);
			}
		}
		senml_base_update(&base, &f);

		reading_init(r, now_ms);
		r->ts_missing = false;
		if(senml_names(&base, &f, r) != IP_OK) continue;
		if(senml_value(&base, &f, r) != IP_OK) continue;
		if(senml_unit(&base, &f, r) != IP_OK) continue;
		senml_time(&base, &f, now_ms, r);
	}
	res->count = n;
	return IP_OK;
}

/* Whatever follows the JSON value: whitespace, or the NULs of a sender that counted its
 * terminator, are fine; anything else means two documents or a truncated one glued to garbage. */
static bool tail_ok(const char *p, const char *end)
{
	for(; p < end; p++){
		if(*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') return false;
	}
	return true;
}

enum ip_reason payload_parse(const char *buf, size_t len, int64_t now_ms,
		struct ip_reading *out, size_t cap, struct payload_result *res)
{
	cJSON *root;
	const char *end = NULL;
	enum ip_reason rc;

	res->reason = IP_OK;
	res->detail[0] = '\0';
	res->count = 0;
	res->form = IP_FORM_NONE;

	if(buf == NULL || len == 0){
		set_detail(res->detail, sizeof(res->detail), "empty payload");
		return refuse(res, IP_R_MALFORMED_PAYLOAD);
	}
	/* buf need not be NUL-terminated: cJSON stops at len */
	root = cJSON_ParseWithLengthOpts(buf, len, &end, false);
	if(root == NULL){
		/* cJSON cannot tell a syntax error from an allocation failure; both end here */
		set_detail(res->detail, sizeof(res->detail), "not JSON");
		return refuse(res, IP_R_MALFORMED_PAYLOAD);
	}
	if(!tail_ok(end, buf + len)){
		set_detail(res->detail, sizeof(res->detail), "data after the JSON value at byte %zu", (size_t)(end - buf));
		rc = refuse(res, IP_R_MALFORMED_PAYLOAD);
	}else if(json_type(root) == cJSON_Object){
		rc = parse_object(root, now_ms, out, cap, res);
	}else if(json_type(root) == cJSON_Array){
		rc = parse_senml(root, now_ms, out, cap, res);
	}else{
		set_detail(res->detail, sizeof(res->detail), "payload is %s, not an object or an array", type_name(root));
		rc = refuse(res, IP_R_MALFORMED_PAYLOAD);
	}
	cJSON_Delete(root);
	return rc;
}

const char *payload_form_name(enum ip_payload_form form)
{
	switch(form){
		case IP_FORM_SINGLE:
			return "single";
		case IP_FORM_MULTI:
			return "multi";
		case IP_FORM_SENML:
			return "senml";
		case IP_FORM_NONE:
		default:
			return "none";
	}
}
