/* The telemetry payload parser: one MQTT payload in, ip_reading rows out.
 *
 * Three JSON shapes are accepted (DESIGN.md section 5):
 *   - the reference form   {"deviceId":"temp-007","sensorId":"temp","value":22.5,"ts":1673456789000}
 *   - several readings     {"deviceId":"d1","ts":...,"readings":{"temp":22.5,"hum":{"value":41,"unit":"%RH"}}}
 *   - a SenML pack (RFC 8428) [{"bn":"d1:","bt":1673456789,"n":"temp","u":"Cel","v":22.5}, ...]
 * A fault that concerns the whole message is reported in payload_result (and no readings are
 * returned); in the multi-reading and SenML shapes a fault in one reading is reported in that
 * reading alone, so its good siblings still go through. */
#ifndef IOTPIPE_PAYLOAD_H
#define IOTPIPE_PAYLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reason.h"

#define IP_ID_MAX 64     /* max id length including NUL */
#define IP_UNIT_MAX 16

struct ip_reading {
	char device_id[IP_ID_MAX];  /* "" when the payload names none (then the topic gives it) */
	char sensor_id[IP_ID_MAX];  /* "" when none: the device's default sensor */
	char unit[IP_UNIT_MAX];     /* "" when none reported */
	double value;
	int64_t ts_ms;              /* event time in ms since the epoch; now_ms when ts_missing */
	bool ts_missing;            /* no ts anywhere: arrival time used, flagged downstream */
	enum ip_reason reason;      /* IP_OK, or why this one reading is refused */
	char detail[96];            /* when reason != IP_OK: human-readable, e.g. "value is a string" */
};

/* Which shape the payload had; IP_FORM_NONE when it was refused before that was known. */
enum ip_payload_form {
	IP_FORM_NONE = 0,
	IP_FORM_SINGLE,             /* the reference form: one reading */
	IP_FORM_MULTI,              /* "readings": {sensorId: value, ...} */
	IP_FORM_SENML,              /* RFC 8428 JSON array */
};

struct payload_result {
	enum ip_reason reason;      /* IP_OK, or why the whole message is refused (then count == 0) */
	char detail[128];
	size_t count;               /* readings written to out[] (good and bad ones) */
	enum ip_payload_form form;
};

/* Latest event time accepted: 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write. */
#define IP_TS_MAX_MS 253402300799999LL

/* processor thread (pure, reentrant). Parses one MQTT payload. now_ms is the arrival time. */
enum ip_reason payload_parse(const char *buf, size_t len, int64_t now_ms,
		struct ip_reading *out, size_t cap, struct payload_result *res);

/* any thread, pure: RFC 3339 date-time (e.g. "2023-01-11T17:06:29.123+02:00") to ms since the
 * epoch. Sub-millisecond digits are truncated, a leap second reads as hh:mm:59.999. false when
 * s is not a strict RFC 3339 date-time, or is before 1970 or after 9999. */
bool payload_rfc3339_ms(const char *s, int64_t *ms);

/* any thread: the form's name for logs and metrics, e.g. "senml". */
const char *payload_form_name(enum ip_payload_form form);

#endif
