/* Quarantine reason codes: machine-readable, stable, shared by every stage. */
#ifndef IOTPIPE_REASON_H
#define IOTPIPE_REASON_H

enum ip_reason {
	IP_OK = 0,
	IP_R_MALFORMED_PAYLOAD,   /* not JSON, or not one of the accepted shapes */
	IP_R_MISSING_FIELD,       /* a required field is absent (deviceId, value, n/v in SenML) */
	IP_R_WRONG_TYPE,          /* a field has the wrong JSON type */
	IP_R_NON_FINITE_VALUE,    /* NaN, Inf or a number outside double range */
	IP_R_BAD_TIMESTAMP,       /* ts present but unparseable (bad RFC 3339, negative, …) */
	IP_R_TS_FUTURE,           /* ts too far in the future */
	IP_R_TS_TOO_OLD,          /* ts older than the accepted age */
	IP_R_UNKNOWN_DEVICE,      /* not in the registry and unknown_devices=quarantine */
	IP_R_UNKNOWN_SENSOR,      /* device known, sensor not */
	IP_R_OUT_OF_RANGE,        /* outside the sensor's min/max */
	IP_R_DUPLICATE,           /* same device, sensor and ts seen before */
	IP_R_OVERSIZED_PAYLOAD,   /* payload larger than max_payload_bytes */
	IP_R_TOO_MANY_READINGS,   /* more readings in one message than allowed */
	IP_R_ID_INVALID,          /* empty, too long, or control characters in an id */
	IP_R_IDENTITY_MISMATCH,   /* topic device id and payload device id differ */
	IP_R_IDENTITY_SPOOF,      /* device id differs from the bound MQTT identity */
	IP_R_UNIT_MISMATCH,       /* reported unit cannot be converted to the registry unit */
	IP_R_SINK_REJECTED,       /* a sink rejected the record for its data */
	IP_R__COUNT
};

/* The code's stable name, e.g. "malformed_payload". */
const char *reason_name(enum ip_reason r);

#endif
