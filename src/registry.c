/* Registry snapshots: building, JSON parsing, lookups. Nothing here logs: errors go back through
 * err, because the parser also runs inside the fuzzer and on loader threads whose callers decide
 * what to say. */

/* A failed insert must not exit() the broker: uthash then leaves the item out and clears its
 * hh.tbl, which registry_add_device checks. Only macro expansions in this file change; the
 * struct layout is the same for every includer of registry.h. */
#define HASH_NONFATAL_OOM 1

#include "registry.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct ip_registry {
	struct ip_device_info *devices;   /* uthash head, keyed by device_id */
	uint64_t version;                 /* 0 while building */
};

/* Shared by every snapshot source so versions in the logs never go backwards. */
static atomic_uint_fast64_t registry__last_version;

static void registry__err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void registry__err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if(err == NULL || errlen == 0) return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* any thread */
const char *registry_id_check(const char *id)
{
	size_t n;

	if(id == NULL || id[0] == '\0') return "is empty";
	n = strnlen(id, IP_ID_MAX);
	if(n >= IP_ID_MAX) return "is 64 bytes or longer";
	for(size_t i = 0; i < n; i++){
		unsigned char c = (unsigned char)id[i];
		/* The id becomes an MQTT topic level (alerts/{deviceId}) and a Kafka key. */
		if(c < 0x20 || c == 0x7f) return "contains a control character";
		if(c == '/') return "contains '/'";
		if(c == '+') return "contains '+'";
		if(c == '#') return "contains '#'";
	}
	return NULL;
}

/* loader thread */
struct ip_registry *registry_new(void)
{
	return calloc(1, sizeof(struct ip_registry));
}

static void registry__free_device(struct ip_device_info *d)
{
	free(d->location);
	free(d->zone);
	free(d->device_type);
	free(d->sensors);
	free(d);
}

static bool registry__dup(const char *s, char **out)
{
	*out = NULL;
	if(s == NULL) return true;
	*out = strdup(s);
	return *out != NULL;
}

/* loader thread */
struct ip_device_info *registry_add_device(struct ip_registry *r, const char *device_id,
		const char *location, const char *zone, const char *device_type, char *err, size_t errlen)
{
	struct ip_device_info *d;
	const char *why;

	if(r->version != 0){
		registry__err(err, errlen, "the snapshot is sealed");
		return NULL;
	}
	why = registry_id_check(device_id);
	if(why){
		registry__err(err, errlen, "\"deviceId\" %s", why);
		return NULL;
	}
	if(registry_find(r, device_id)){
		registry__err(err, errlen, "duplicate \"deviceId\"");
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if(d == NULL) goto oom;
	strcpy(d->device_id, device_id);   /* length checked above */
	d->any_sensor = true;
	if(!registry__dup(location, &d->location)
			|| !registry__dup(zone, &d->zone)
			|| !registry__dup(device_type, &d->device_type)){
		goto oom;
	}
	HASH_ADD_STR(r->devices, device_id, d);
	if(d->hh.tbl == NULL) goto oom;
	return d;

oom:
	if(d) registry__free_device(d);
	registry__err(err, errlen, "out of memory");
	return NULL;
}

/* loader thread */
void registry_sensor_init(struct ip_sensor_info *s)
{
	memset(s, 0, sizeof(*s));
	s->min = -INFINITY;
	s->max = INFINITY;
	s->threshold = NAN;
	s->anomaly_z = 0;
}

/* loader thread */
bool registry_add_sensor(struct ip_device_info *d, const struct ip_sensor_info *s, char *err, size_t errlen)
{
	struct ip_sensor_info *grown;
	const char *why;

	/* Fixed arrays filled by a caller: make sure they end before reading them as strings. */
	if(memchr(s->sensor_id, '\0', sizeof(s->sensor_id)) == NULL){
		registry__err(err, errlen, "\"sensorId\" is not terminated");
		return false;
	}
	if(memchr(s->unit, '\0', sizeof(s->unit)) == NULL){
		registry__err(err, errlen, "\"unit\" is not terminated");
		return false;
	}
	why = registry_id_check(s->sensor_id);
	if(why){
		registry__err(err, errlen, "\"sensorId\" %s", why);
		return false;
	}
	if(isnan(s->min) || isnan(s->max)){
		registry__err(err, errlen, "\"min\" or \"max\" is NaN");
		return false;
	}
	if(s->min > s->max){
		registry__err(err, errlen, "\"min\" (%g) is greater than \"max\" (%g)", s->min, s->max);
		return false;
	}
	if(!(s->anomaly_z >= 0) || isinf(s->anomaly_z)){
		registry__err(err, errlen, "\"anomalyZ\" must be finite and not negative (0: the default)");
		return false;
	}
	for(size_t i = 0; i < d->nsensors; i++){
		if(strcmp(d->sensors[i].sensor_id, s->sensor_id) == 0){
			registry__err(err, errlen, "duplicate \"sensorId\"");
			return false;
		}
	}
	if(d->nsensors >= IP_REGISTRY_MAX_SENSORS){
		registry__err(err, errlen, "more than %d sensors", IP_REGISTRY_MAX_SENSORS);
		return false;
	}
	grown = realloc(d->sensors, (d->nsensors + 1) * sizeof(*grown));
	if(grown == NULL){
		registry__err(err, errlen, "out of memory");
		return false;
	}
	d->sensors = grown;
	d->sensors[d->nsensors++] = *s;
	d->any_sensor = false;
	return true;
}

/* loader thread */
void registry_seal(struct ip_registry *r)
{
	if(r->version != 0) return;
	r->version = atomic_fetch_add(&registry__last_version, 1) + 1;
}

/* --- JSON --------------------------------------------------------------------------------- */

/* Absent and null both mean unset: exporters (and the PostgreSQL loader's NULLs) write either. */
static bool json__opt_string(const cJSON *obj, const char *name, const char **out,
		const char *where, char *err, size_t errlen)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

	*out = NULL;
	if(it == NULL || cJSON_IsNull(it)) return true;
	if(!cJSON_IsString(it) || it->valuestring == NULL){
		registry__err(err, errlen, "%s: \"%s\" is not a string", where, name);
		return false;
	}
	*out = it->valuestring;
	return true;
}

static bool json__opt_number(const cJSON *obj, const char *name, double *out, bool *present,
		const char *where, char *err, size_t errlen)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

	*present = false;
	if(it == NULL || cJSON_IsNull(it)) return true;
	if(!cJSON_IsNumber(it)){
		registry__err(err, errlen, "%s: \"%s\" is not a number", where, name);
		return false;
	}
	/* cJSON turns 1e999 into infinity */
	if(!isfinite(it->valuedouble)){
		registry__err(err, errlen, "%s: \"%s\" is not a finite number", where, name);
		return false;
	}
	*out = it->valuedouble;
	*present = true;
	return true;
}

/* A required id: on success *id is valid per registry_id_check. */
static bool json__id(const cJSON *obj, const char *name, const char **id,
		const char *where, char *err, size_t errlen)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
	const char *why;

	if(it == NULL){
		registry__err(err, errlen, "%s: \"%s\" is missing", where, name);
		return false;
	}
	if(!cJSON_IsString(it) || it->valuestring == NULL){
		registry__err(err, errlen, "%s: \"%s\" is not a string", where, name);
		return false;
	}
	why = registry_id_check(it->valuestring);
	if(why){
		registry__err(err, errlen, "%s: \"%s\" %s", where, name, why);
		return false;
	}
	*id = it->valuestring;
	return true;
}

static bool json__sensor(struct ip_device_info *d, const cJSON *js, size_t j, const char *dwhere,
		char *err, size_t errlen)
{
	struct ip_sensor_info si;
	char where[256];
	char msg[160];
	const char *sid, *unit;
	double v;
	bool present;

	snprintf(where, sizeof(where), "%s: sensors[%zu]", dwhere, j);
	if(!cJSON_IsObject(js)){
		registry__err(err, errlen, "%s is not an object", where);
		return false;
	}
	if(!json__id(js, "sensorId", &sid, where, err, errlen)) return false;
	snprintf(where, sizeof(where), "%s: sensors[%zu] (\"%s\")", dwhere, j, sid);

	registry_sensor_init(&si);
	strcpy(si.sensor_id, sid);   /* length checked by json__id */

	if(!json__opt_string(js, "unit", &unit, where, err, errlen)) return false;
	if(unit){
		if(strlen(unit) >= IP_UNIT_MAX){
			registry__err(err, errlen, "%s: \"unit\" is %d bytes or longer", where, IP_UNIT_MAX);
			return false;
		}
		strcpy(si.unit, unit);
	}
	if(!json__opt_number(js, "min", &v, &present, where, err, errlen)) return false;
	if(present) si.min = v;
	if(!json__opt_number(js, "max", &v, &present, where, err, errlen)) return false;
	if(present) si.max = v;
	if(!json__opt_number(js, "threshold", &v, &present, where, err, errlen)) return false;
	if(present) si.threshold = v;
	if(!json__opt_number(js, "anomalyZ", &v, &present, where, err, errlen)) return false;
	if(present){
		/* In the file 0 would silently mean "default"; an explicit value must be usable. */
		if(v <= 0){
			registry__err(err, errlen, "%s: \"anomalyZ\" must be greater than 0", where);
			return false;
		}
		si.anomaly_z = v;
	}
	if(!registry_add_sensor(d, &si, msg, sizeof(msg))){
		registry__err(err, errlen, "%s: %s", where, msg);
		return false;
	}
	return true;
}

static bool json__device(struct ip_registry *r, const cJSON *jd, size_t i, char *err, size_t errlen)
{
	struct ip_device_info *d;
	const cJSON *sensors, *js;
	char where[128];
	char msg[160];
	const char *id, *location, *zone, *device_type;
	size_t j;

	snprintf(where, sizeof(where), "devices[%zu]", i);
	if(!cJSON_IsObject(jd)){
		registry__err(err, errlen, "%s is not an object", where);
		return false;
	}
	if(!json__id(jd, "deviceId", &id, where, err, errlen)) return false;
	snprintf(where, sizeof(where), "devices[%zu] (\"%s\")", i, id);

	if(!json__opt_string(jd, "location", &location, where, err, errlen)
			|| !json__opt_string(jd, "zone", &zone, where, err, errlen)
			|| !json__opt_string(jd, "deviceType", &device_type, where, err, errlen)){
		return false;
	}
	sensors = cJSON_GetObjectItemCaseSensitive(jd, "sensors");
	if(sensors != NULL && !cJSON_IsNull(sensors) && !cJSON_IsArray(sensors)){
		registry__err(err, errlen, "%s: \"sensors\" is not an array", where);
		return false;
	}
	d = registry_add_device(r, id, location, zone, device_type, msg, sizeof(msg));
	if(d == NULL){
		registry__err(err, errlen, "%s: %s", where, msg);
		return false;
	}
	/* An empty list means the same as no list, as a device without rows in the PostgreSQL
	 * sensors table will: rejecting every reading is never what an operator wants. */
	j = 0;
	cJSON_ArrayForEach(js, sensors){
		if(!json__sensor(d, js, j, where, err, errlen)) return false;
		j++;
	}
	return true;
}

/* loader thread */
bool registry_parse_json(const char *buf, size_t len, struct ip_registry **out, char *err, size_t errlen)
{
	struct ip_registry *r = NULL;
	cJSON *root;
	const cJSON *devices, *jd;
	const char *end = NULL;
	size_t i;

	*out = NULL;
	root = cJSON_ParseWithLengthOpts(buf, len, &end, false);
	if(root == NULL){
		size_t at = (end != NULL && end >= buf && end <= buf + len) ? (size_t)(end - buf) : 0;
		registry__err(err, errlen, "not valid JSON (near byte %zu)", at);
		return false;
	}
	/* cJSON can only demand a NUL inside len, so check for trailing garbage here. */
	for(i = (size_t)(end - buf); i < len; i++){
		if(buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\n' && buf[i] != '\r'){
			registry__err(err, errlen, "unexpected data after the JSON document (byte %zu)", i);
			goto failed;
		}
	}
	if(!cJSON_IsObject(root)){
		registry__err(err, errlen, "not a JSON object");
		goto failed;
	}
	devices = cJSON_GetObjectItemCaseSensitive(root, "devices");
	if(devices == NULL){
		registry__err(err, errlen, "\"devices\" is missing");
		goto failed;
	}
	if(!cJSON_IsArray(devices)){
		registry__err(err, errlen, "\"devices\" is not an array");
		goto failed;
	}
	r = registry_new();
	if(r == NULL){
		registry__err(err, errlen, "out of memory");
		goto failed;
	}
	i = 0;
	cJSON_ArrayForEach(jd, devices){
		if(!json__device(r, jd, i, err, errlen)) goto failed;
		i++;
	}
	cJSON_Delete(root);
	registry_seal(r);
	*out = r;
	return true;

failed:
	registry_free(r);
	cJSON_Delete(root);
	return false;
}

/* loader thread */
bool registry_read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
	struct stat st;
	char ebuf[128];
	char *buf = NULL, *grown;
	size_t len = 0, cap;
	ssize_t n;
	int fd;

	*out = NULL;
	*outlen = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if(fd < 0){
		registry__err(err, errlen, "cannot open: %s", strerror_r(errno, ebuf, sizeof(ebuf)));
		return false;
	}
	if(fstat(fd, &st) < 0){
		registry__err(err, errlen, "cannot stat: %s", strerror_r(errno, ebuf, sizeof(ebuf)));
		goto failed;
	}
	if(!S_ISREG(st.st_mode)){
		registry__err(err, errlen, "not a regular file");
		goto failed;
	}
	if((uintmax_t)st.st_size > IP_REGISTRY_MAX_BYTES) goto too_large;

	/* One spare byte so a file read whole in one go is told apart from one still growing. */
	cap = (size_t)st.st_size + 1;
	buf = malloc(cap);
	if(buf == NULL){
		registry__err(err, errlen, "out of memory");
		goto failed;
	}
	for(;;){
		if(len == cap){
			if(cap > IP_REGISTRY_MAX_BYTES) goto too_large;
			cap *= 2;
			grown = realloc(buf, cap);
			if(grown == NULL){
				registry__err(err, errlen, "out of memory");
				goto failed;
			}
			buf = grown;
		}
		n = read(fd, buf + len, cap - len);
		if(n < 0){
			if(errno == EINTR) continue;
			registry__err(err, errlen, "cannot read: %s", strerror_r(errno, ebuf, sizeof(ebuf)));
			goto failed;
		}
		if(n == 0) break;
		len += (size_t)n;
	}
	if(len > IP_REGISTRY_MAX_BYTES) goto too_large;
	close(fd);
	*out = buf;
	*outlen = len;
	return true;

too_large:
	registry__err(err, errlen, "larger than %u bytes", IP_REGISTRY_MAX_BYTES);
failed:
	free(buf);
	close(fd);
	return false;
}

/* loader thread */
bool registry_load_file(const char *path, struct ip_registry **out, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	bool ok;

	*out = NULL;
	if(!registry_read_file(path, &buf, &len, err, errlen)) return false;
	ok = registry_parse_json(buf, len, out, err, errlen);
	free(buf);
	return ok;
}

/* --- lookups -------------------------------------------------------------------------------- */

/* processor thread */
const struct ip_device_info *registry_find(const struct ip_registry *r, const char *device_id)
{
	struct ip_device_info *head, *d;
	size_t n;

	if(r == NULL || device_id == NULL) return NULL;
	/* Ids that cannot be stored are not hashed: a device may send a megabyte of id. */
	n = strnlen(device_id, IP_ID_MAX);
	if(n == 0 || n >= IP_ID_MAX) return NULL;
	head = r->devices;
	HASH_FIND(hh, head, device_id, n, d);
	return d;
}

/* processor thread */
const struct ip_sensor_info *registry_sensor(const struct ip_device_info *d, const char *sensor_id)
{
	if(d == NULL || d->nsensors == 0) return NULL;
	if(sensor_id == NULL || sensor_id[0] == '\0') return &d->sensors[0];
	for(size_t i = 0; i < d->nsensors; i++){
		if(strcmp(d->sensors[i].sensor_id, sensor_id) == 0) return &d->sensors[i];
	}
	return NULL;
}

/* any reader */
const struct ip_device_info *registry_first(const struct ip_registry *r)
{
	return r ? r->devices : NULL;
}

/* any reader */
const struct ip_device_info *registry_next(const struct ip_device_info *d)
{
	return d ? d->hh.next : NULL;
}

/* any thread */
size_t registry_count(const struct ip_registry *r)
{
	if(r == NULL) return 0;
	return HASH_COUNT(r->devices);
}

/* any thread */
uint64_t registry_version(const struct ip_registry *r)
{
	if(r == NULL) return 0;
	return r->version;
}

/* the owning thread */
void registry_free(struct ip_registry *r)
{
	struct ip_device_info *d, *tmp;

	if(r == NULL) return;
	HASH_ITER(hh, r->devices, d, tmp){
		HASH_DEL(r->devices, d);
		registry__free_device(d);
	}
	free(r);
}
