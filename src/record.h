/* The bodies of journal records. Ingest holds captures (what the broker received); the outbox holds
 * output records. Each body is self-contained: fixed fields, then NUL-terminated strings, so a
 * decoded view points straight into the journal mapping and nothing points into the registry. */
#ifndef IOTPIPE_RECORD_H
#define IOTPIPE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum rec_kind {
	REC_CAPTURE = 1,            /* ingest */
	REC_RAW = 16,               /* outbox kinds from here on */
	REC_ENRICHED,
	REC_ALERT,
	REC_QUARANTINE,
	REC_AGGREGATE,
	REC__END
};

#define CAPTURE_RETAIN 0x01
#define CAPTURE_TRUNCATED 0x02  /* payload over max_payload_bytes: only its head was kept */
#define CAPTURE_HEAD_BYTES 1024

struct capture_hdr {
	int64_t arrival_ms;
	uint32_t payload_len;       /* as published */
	uint32_t stored_len;        /* as journaled */
	uint16_t topic_len, client_len, user_len;   /* without their NULs */
	uint8_t qos, flags;
};

struct capture {
	struct capture_hdr h;
	const char *topic, *client_id, *username;
	const uint8_t *payload;
};

/* main thread: fills iov[5] for journal_append of one capture; hdr must outlive the append. A payload
 * over max_payload is cut to its head and flagged CAPTURE_TRUNCATED. */
int capture_iov(struct capture_hdr *hdr, struct iovec iov[5], const char *topic, const char *client_id,
		const char *username, const void *payload, uint32_t payload_len, uint32_t max_payload,
		uint8_t qos, bool retain, int64_t arrival_ms);
/* any thread: false when the body is not a well-formed capture */
bool capture_decode(const uint8_t *body, size_t len, struct capture *c);

enum alert_kind_code { OUT_ALERT_THRESHOLD = 1, OUT_ALERT_ZSCORE = 2 };
enum alert_state_code { OUT_ALERT_FIRING = 1, OUT_ALERT_RESOLVED = 2 };

#define OUT_TS_MISSING 0x0001   /* no timestamp in the payload: arrival time used */
#define OUT_ANOMALY 0x0002
#define OUT_LATE 0x0004         /* after its window closed: stored, not aggregated */
#define OUT_UNENRICHED 0x0008   /* unknown device accepted without registry data */
#define OUT_HAS_THRESHOLD 0x0010
#define OUT_TRUNCATED 0x0020    /* quarantine: payload holds only the head of the original */

/* One output record, decoded or to encode. Strings are NUL-terminated; NULL means absent. */
struct outrec {
	uint16_t kind;
	uint16_t flags;
	uint16_t reason;            /* quarantine: enum ip_reason */
	uint8_t alert_kind, alert_state, qos;
	uint32_t count;             /* aggregate */
	uint32_t payload_len;
	uint32_t orig_payload_len;  /* quarantine of a truncated payload */
	uint64_t id;                /* stable record id, DESIGN.md section 4 */
	uint64_t src_lsn;           /* ingest LSN it came from */
	int64_t ts_ms;              /* reading / alert event time; aggregate window start; raw/quarantine arrival */
	int64_t arrival_ms;
	int64_t win_end_ms, first_ts_ms, last_ts_ms;
	double value, limit, score; /* enriched: value, threshold, z-score; alert: value, limit, score */
	double sum, min, max;       /* aggregate */
	const char *device_id, *sensor_id, *location, *zone, *device_type, *unit;
	const char *topic, *client_id, *username, *detail;
	const uint8_t *payload;
};

/* any thread: encodes r into buf; returns the size, or 0 when cap is too small */
size_t outrec_encode(const struct outrec *r, uint8_t *buf, size_t cap);
/* any thread: a view into body; false when malformed */
bool outrec_decode(uint16_t kind, const uint8_t *body, size_t len, struct outrec *r);

/* any thread: the record as one JSON object (no newline) into buf; returns its length or 0 */
size_t outrec_to_json(const struct outrec *r, char *buf, size_t cap);

/* The same with one generator kept for many records: for a thread that writes a stream of them
 * (a sink). Owned by one thread at a time; outrec_json_new returns NULL when out of memory. With
 * keep_series it keeps the JSON of each series' strings and threshold for its next reading
 * (record.c): up to 4 MiB, for far less CPU per enriched record. */
struct outrec_json;
struct outrec_json *outrec_json_new(bool keep_series);
size_t outrec_json(struct outrec_json *j, const struct outrec *r, char *buf, size_t cap);
void outrec_json_free(struct outrec_json *j);

/* "enriched", "alert", ... ; the file sink's file names and the Kafka topic suffixes */
const char *rec_kind_name(uint16_t kind);

/* Stable ids (DESIGN.md section 4): from what a record describes, never from arrival order. */
uint64_t record_id_reading(const char *device_id, const char *sensor_id, int64_t ts_ms);
uint64_t record_id_alert(const char *device_id, const char *sensor_id, int64_t ts_ms, int kind, int state);
uint64_t record_id_aggregate(const char *device_id, const char *sensor_id, int64_t win_start_ms);
uint64_t record_id_lsn(uint16_t kind, uint64_t lsn, uint32_t index);

#endif
