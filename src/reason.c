#include "reason.h"

static const char *const names[IP_R__COUNT] = {
	[IP_OK] = "ok",
	[IP_R_MALFORMED_PAYLOAD] = "malformed_payload",
	[IP_R_MISSING_FIELD] = "missing_field",
	[IP_R_WRONG_TYPE] = "wrong_type",
	[IP_R_NON_FINITE_VALUE] = "non_finite_value",
	[IP_R_BAD_TIMESTAMP] = "bad_timestamp",
	[IP_R_TS_FUTURE] = "ts_future",
	[IP_R_TS_TOO_OLD] = "ts_too_old",
	[IP_R_UNKNOWN_DEVICE] = "unknown_device",
	[IP_R_UNKNOWN_SENSOR] = "unknown_sensor",
	[IP_R_OUT_OF_RANGE] = "out_of_range",
	[IP_R_DUPLICATE] = "duplicate",
	[IP_R_OVERSIZED_PAYLOAD] = "oversized_payload",
	[IP_R_TOO_MANY_READINGS] = "too_many_readings",
	[IP_R_ID_INVALID] = "id_invalid",
	[IP_R_IDENTITY_MISMATCH] = "identity_mismatch",
	[IP_R_IDENTITY_SPOOF] = "identity_spoof",
	[IP_R_UNIT_MISMATCH] = "unit_mismatch",
	[IP_R_SINK_REJECTED] = "sink_rejected",
};

const char *reason_name(enum ip_reason r)
{
	if((unsigned)r >= IP_R__COUNT) return "unknown";
	return names[r];
}
