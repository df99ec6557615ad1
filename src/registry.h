/* The device registry: an immutable snapshot of known devices and their sensors.
 *
 * A snapshot is built on a loader thread (from the JSON registry_file, later from PostgreSQL),
 * sealed, and handed to the processor by pointer (see regwatch.h). Once published nobody writes
 * to it, so the processor reads it without locks; it is freed whole when the processor has let go
 * of it. Pointers into a snapshot (device and sensor infos, their strings) are valid only as long
 * as the snapshot itself: never keep them across a snapshot change. */
#ifndef IOTPIPE_REGISTRY_H
#define IOTPIPE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uthash.h>

/* Also defined by payload.h; both must agree. */
#ifndef IP_ID_MAX
#define IP_ID_MAX 64      /* device and sensor ids are shorter than this, NUL included */
#endif
#ifndef IP_UNIT_MAX
#define IP_UNIT_MAX 16
#endif

/* Sensors are found by a linear scan (cheaper than hashing for the usual handful); this bounds it. */
#define IP_REGISTRY_MAX_SENSORS 1024

/* A registry file larger than this is refused rather than read into memory. */
#define IP_REGISTRY_MAX_BYTES (256u * 1024u * 1024u)

struct ip_sensor_info {
	char sensor_id[IP_ID_MAX];
	char unit[IP_UNIT_MAX];     /* "" when unset */
	double min, max;            /* -INFINITY / INFINITY when unset */
	double threshold;           /* NAN when unset */
	double anomaly_z;           /* 0 when unset: the processor's default applies */
};

struct ip_device_info {
	char device_id[IP_ID_MAX];
	char *location, *zone, *device_type;   /* NULL when unset */
	bool any_sensor;            /* no sensors listed: any sensor id is accepted, without limits */
	size_t nsensors;
	struct ip_sensor_info *sensors;        /* sensors[0] is the default sensor */
	UT_hash_handle hh;
};

struct ip_registry;   /* opaque, immutable once sealed; safe to read from any thread without locks */

/* any thread: NULL when id is a valid device or sensor id, else why not (e.g. "contains '/'").
 * Valid: 1 to IP_ID_MAX-1 bytes, no control characters, no MQTT topic separators or wildcards. */
const char *registry_id_check(const char *id);

/* loader thread: an empty, unsealed snapshot; NULL when out of memory. */
struct ip_registry *registry_new(void);

/* loader thread: adds a device with no sensors (any_sensor true until registry_add_sensor).
 * The strings are copied; NULL leaves a field unset. NULL with err set on an invalid or
 * duplicate id, or out of memory. */
struct ip_device_info *registry_add_device(struct ip_registry *r, const char *device_id,
		const char *location, const char *zone, const char *device_type, char *err, size_t errlen);

/* loader thread: every field of s unset and sensor_id "", ready to be filled in. */
void registry_sensor_init(struct ip_sensor_info *s);

/* loader thread: appends a copy of s to d (the first one added is the default sensor) and
 * clears d->any_sensor. false with err set on an invalid or duplicate sensor id, an unterminated
 * unit, min > max, a NaN limit, anomaly_z < 0 or infinite, more than IP_REGISTRY_MAX_SENSORS,
 * or out of memory. */
bool registry_add_sensor(struct ip_device_info *d, const struct ip_sensor_info *s, char *err, size_t errlen);

/* loader thread: ends building: gives the snapshot the next version number. Idempotent;
 * regslot_publish() seals for builders that forget. */
void registry_seal(struct ip_registry *r);

/* loader thread: parses a registry document (buf need not be NUL-terminated) into a new
 * sealed snapshot. On any error nothing is returned and err names the device, the sensor and
 * the field, e.g. `devices[3] ("temp-9"): sensors[0] ("temp"): "min" is not a number`.
 * Never logs. */
bool registry_parse_json(const char *buf, size_t len, struct ip_registry **out, char *err, size_t errlen);

/* loader thread: reads a whole regular file of at most IP_REGISTRY_MAX_BYTES into a malloc'd
 * buffer (*buf, not NUL-terminated; free() it). err does not repeat the path. */
bool registry_read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen);

/* loader thread: registry_read_file() then registry_parse_json(). err does not repeat the path. */
bool registry_load_file(const char *path, struct ip_registry **out, char *err, size_t errlen);

/* processor thread (any reader): one hash lookup, no allocation; NULL when unknown. */
const struct ip_device_info *registry_find(const struct ip_registry *r, const char *device_id);

/* processor thread (any reader): sensor_id "" (or NULL) means the default sensor. NULL when the
 * device lists no such sensor; for an any_sensor device always NULL, so check d->any_sensor
 * before treating NULL as unknown_sensor. */
const struct ip_sensor_info *registry_sensor(const struct ip_device_info *d, const char *sensor_id);

/* any reader: every device in the order it was added (file order); NULL after the last. */
const struct ip_device_info *registry_first(const struct ip_registry *r);
const struct ip_device_info *registry_next(const struct ip_device_info *d);

/* any thread */
size_t registry_count(const struct ip_registry *r);

/* any thread: increases with every sealed snapshot (0 before sealing); for logs, and for
 * readers to notice that the snapshot changed under their caches. */
uint64_t registry_version(const struct ip_registry *r);

/* The thread that owns the snapshot: nobody may read it any more. NULL is fine. */
void registry_free(struct ip_registry *r);

#endif
